"""cand.adapters.exabgp_run: each replacement does what the ExaBGP code it replaces does, on
generated input (compared with ExaBGP's own functions, which it leaves in place), and the tuned
ExaBGP turns cand's commands into the same routes as the untuned one (in a child process, so
that this process's ExaBGP stays untouched)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("exabgp")

from exabgp.bgp.message.update.attribute.generic import GenericAttribute
from exabgp.configuration.core.format import tokens
from exabgp.configuration.static import parser

from cand import config
from cand.adapters import exabgp_run
from cand.adapters.exabgp import ExabgpOptions, ExabgpSpeaker, command
from tests.golden.test_bgp_codec import ROUTE


def exabgp_statements(line: str) -> list[list[str]] | str:
    """ExaBGP's own tokeniser on one API line: its statements, or its error."""
    try:
        return [[word for _, _, word in parsed] for parsed in tokens(iter([line]))]
    except ValueError as e:
        return f"error: {e}"


WORDS = st.sampled_from(
    ["announce", "route", "2001:db8::1/128", "0x20", "0xc0", "0x00ff", "attribute", "igp", "a"]
)
SPECIAL = st.sampled_from([" ", "  ", "\t", ";", "{", "}", "[", "]", ",", "(", ")", '"', "'"])
RARE = st.sampled_from(["#", "\\", "\\n", "\r", "\n", "\x0b", "\u00a0"])
LINES = st.lists(st.one_of(WORDS, SPECIAL, SPECIAL, RARE), max_size=30).map("".join)


@given(LINES)
@settings(max_examples=2000)
def test_statements_are_exabgps_or_none(line: str) -> None:
    ours = exabgp_run.statements(line)
    if ours is not None:
        assert ours == exabgp_statements(line)


def test_cand_commands_take_the_fast_path() -> None:
    line = command(ROUTE, 65000, 48) + " ;"
    assert exabgp_run.statements(line) == exabgp_statements(line)
    assert exabgp_run.statements(line) is not None
    # what only the character walk can answer is left to it
    assert exabgp_run.statements('announce route "a b" ;') is None
    assert exabgp_run.statements("announce route a") is None  # no end: ExaBGP's error


def run_parser(attribute: Callable[[Callable[[], str]], GenericAttribute], words: list[str]) -> str:
    feed = iter(words)

    def tokeniser() -> str:
        return next(feed, "")

    try:
        got = attribute(tokeniser)
    except ValueError as e:
        return f"error: {e}"
    return f"{got.ID} {got.FLAG} {got.data.hex()}"


HEXISH = st.text(alphabet="0123456789abcdefABCDEF+-_ xg", max_size=12)
TOKEN = st.one_of(HEXISH.map(lambda s: "0x" + s), HEXISH, st.just("0x"))


@given(st.lists(st.one_of(TOKEN, st.sampled_from(["[", "]"])), min_size=5, max_size=5))
@settings(max_examples=2000)
def test_attribute_parser_is_exabgps(words: list[str]) -> None:
    tuned = exabgp_run._attribute_parser(GenericAttribute)
    assert run_parser(tuned, words) == run_parser(parser.attribute, words)


@given(st.text(alphabet="0123456789abcdef+_ ", max_size=20).filter(lambda s: len(s) % 2 == 0))
def test_hex_bytes_is_exabgps_decoding(digits: str) -> None:
    words = ["[", "0x20", "0xc0", "0x" + digits, "]"]
    tuned = exabgp_run._attribute_parser(GenericAttribute)
    assert run_parser(tuned, words) == run_parser(parser.attribute, words)


def test_another_release_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp import version

    monkeypatch.setattr(version, "release", "9.9.9")
    assert exabgp_run.tune() is False


def test_the_speaker_starts_the_tuned_exabgp_unless_told_a_binary() -> None:
    raw = {
        "router": {"id": "fc00:ff::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
        "bgp": {"speaker": "exabgp", "neighbors": [{"address": "fc00:a::1", "asn": 65000}]},
    }
    cfg = config.parse(raw)
    tuned = ExabgpSpeaker(cfg, ExabgpOptions())._program()
    assert tuned == [sys.executable, "-m", "cand.adapters.exabgp_run"]
    assert ExabgpSpeaker(cfg, ExabgpOptions(binary="/opt/exabgp"))._program() == ["/opt/exabgp"]


def test_exabgp_logs_warnings_unless_told_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {
        "router": {"id": "fc00:ff::3", "roles": ["egress"], "locator": "fc00:0:3::/48"},
        "bgp": {"speaker": "exabgp", "neighbors": [{"address": "fc00:a::1", "asn": 65000}]},
    }
    speaker = ExabgpSpeaker(config.parse(raw), ExabgpOptions())
    monkeypatch.delenv("exabgp_log_level", raising=False)
    assert speaker._env(tmp_path)["exabgp_log_level"] == "WARNING"  # not a line per path
    monkeypatch.setenv("exabgp_log_level", "DEBUG")
    assert speaker._env(tmp_path)["exabgp_log_level"] == "DEBUG"


# In a child process: cand's commands (edge metadata and graceful shutdown included, and
# broken ones) through ExaBGP's API parser, untuned then tuned; the routes must be the same.
SAME_ROUTES = """
import os, sys
os.environ.update(exabgp_log_destination=sys.argv[2], exabgp_tcp_bind="")
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.configuration.configuration import Configuration
from exabgp.reactor.api import API
from cand.adapters import exabgp_run
from cand.adapters.exabgp import commands, withdraw_command
from tests.golden.test_bgp_codec import ROUTE
from bench.route_feed import routes
from dataclasses import replace

conf = Configuration([sys.argv[1]])
assert conf.reload(), conf.error
class Reactor:
    configuration = conf
api = API(Reactor())
rs = routes("fc00:a::3", 20, 3) + [ROUTE, replace(ROUTE, graceful_shutdown=True)]
lines = [l for r in rs for l in commands(r, 65000, 48, 0xFF01, ["fc00:a::1"], ["fc00:a::2"])]
lines += [l.replace("neighbor fc00:a::1 ", "") for l in lines]
lines += [withdraw_command(r.key, r.egress) for r in rs]
first = lines[0]
lines += [first.replace("0xc0", "0xzz"), first[:-2], first + " ]", first.replace("0x0", "0x+")]

def parse():
    out = []
    for line in lines:
        line = line.split(" ", 2)[2] if line.startswith("neighbor ") else line
        changes = api.api_route(line)
        out.append([(c.extensive(), sorted(a.pack().hex() for a in c.attributes.values()))
                    for c in changes])
    return out

before = parse()
assert exabgp_run.tune()
after = parse()
assert before == after, [i for i, (b, a) in enumerate(zip(before, after)) if b != a]
print("parsed", sum(map(len, after)), "routes,", sum(1 for x in after if not x), "refused")
"""

CONF = """
neighbor fc00:a::1 { router-id 10.0.0.3; local-address fc00:a::3; local-as 65000; peer-as 65000;
  family { ipv6 unicast; } capability { add-path send/receive; } }
neighbor fc00:a::2 { router-id 10.0.0.3; local-address fc00:a::3; local-as 65000; peer-as 65000;
  family { ipv6 unicast; } capability { add-path send/receive; } }
"""


def test_tuned_exabgp_makes_the_same_routes_of_cand_commands(tmp_path: Path) -> None:
    conf = tmp_path / "exabgp.conf"
    conf.write_text(CONF)
    root = Path(__file__).resolve().parents[2]
    got = subprocess.run(
        [sys.executable, "-c", SAME_ROUTES, str(conf), str(tmp_path / "exabgp.log")],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    parsed, refused = got.stdout.split()[1], got.stdout.split()[3]
    assert int(parsed) > 100 and int(refused) >= 3, got.stdout
