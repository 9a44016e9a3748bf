"""Hostile and careless cand.toml files: only ConfigError leaves the loader, and whatever it
accepts can be run (the engine config, the plan and the plugins' options all build).

Two kinds of input: text mutations of the shipped example (byte flips, cuts, numbers of
thousands of digits, deep nesting, inserted fragments), and well-formed TOML whose values are
replaced, one leaf at a time, by values of the wrong type, size or range."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cand import config, wiring

EXAMPLE = Path(__file__).parents[2] / "examples" / "cand.toml"
TEXT = EXAMPLE.read_text()
DATA = tomllib.loads(TEXT)

fragments = st.sampled_from(
    [
        "1" * 5000,
        "1e99999",
        "-inf",
        "nan",
        "[" * 3000,
        "{a=" * 2000,
        "[[services]]\n",
        "\n[router]\n",
        '"\\u0000"',
        '"' + "x" * 70_000 + '"',
        "0x" + "f" * 300,
        "1979-05-27T07:32:00Z",
        "= =",
        "\x00",
        "\ud7ff",
    ]
) | st.text(max_size=40)


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    text = TEXT
    kind = draw(st.sampled_from(["insert", "flip", "cut", "replace_value"]))
    if kind == "insert":
        i = draw(st.integers(0, len(text)))
        return (text[:i] + draw(fragments) + text[i:]).encode("utf-8", "surrogatepass")
    if kind == "flip":
        raw = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 6))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if kind == "cut":
        return text[: draw(st.integers(0, len(text)))].encode()
    lines = text.splitlines()
    assignments = [i for i, line in enumerate(lines) if "=" in line and not line.startswith("#")]
    i = draw(st.sampled_from(assignments))
    name = lines[i].split("=", 1)[0]
    lines[i] = f"{name}= {draw(fragments)}"
    return "\n".join(lines).encode("utf-8", "surrogatepass")


leaf_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        ["::", "::1", "fe80::1%eth0", "0.0.0.0", "256.1.1.1", "fc00::/129", "a\x00b", "", "-1"]
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(DATA)


@st.composite
def mutated_data(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(DATA)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            if draw(st.booleans()) or not isinstance(node, dict):
                node[path[-1]] = draw(leaf_values)
            else:
                node[draw(st.text(max_size=12))] = draw(leaf_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation changed the shape above this path
    return data


def usable(cfg: config.Config) -> None:
    """What `cand run` does with a config `cand validate` accepted, before it starts."""
    cfg.engine_config()
    wiring.plan(cfg)
    wiring.build_adapters(cfg)


def test_the_example_is_valid_and_usable() -> None:
    usable(config.load(EXAMPLE))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_text())
def test_mutated_files_raise_only_config_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "cand.toml"
    path.write_bytes(raw)
    try:
        cfg = config.load(path)
        wiring.check(cfg)
    except config.ConfigError as e:
        assert e.problems and all(p and why for p, why in e.problems)
        return
    usable(cfg)


@settings(max_examples=600, deadline=None)
@given(mutated_data())
def test_wrong_values_raise_only_config_error(data: dict[str, Any]) -> None:
    try:
        cfg = config.parse(data, "fuzz")
        wiring.check(cfg)
    except config.ConfigError as e:
        assert e.problems and all(p and why for p, why in e.problems)
        return
    usable(cfg)


# --- one regression test per finding ---------------------------------------------------------


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cand.toml"
    p.write_text(text)
    return p


BASE = '[router]\nid = "fc00::1"\nroles = ["ingress"]\n'


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("[mqtt]\nmax_expiry = inf\n", "mqtt.max_expiry"),
        ("[damping]\nhalf_life = nan\n", "damping.half_life"),
        ('[network_cost.static]\n"fc00::2" = 1\n"fc00:0::2" = 2\n', "network_cost.static"),
        ('[bgp]\nspeaker = "exabgp"\n[bgp.options]\neor_defer = "soon"\n', "bgp.options.eor_defer"),
        ('[bgp]\nspeaker = "no-such"\n', "bgp.speaker"),
        ('[decision]\npolicy = "no-such"\n', "decision.policy"),
    ],
)
def test_findings_name_their_field(tmp_path: Path, extra: str, field: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        wiring.check(config.load(_file(tmp_path, BASE + extra)))
    assert [p for p, _ in e.value.problems] == [field], e.value.problems


def test_huge_integer_and_deep_nesting_are_syntax_errors(tmp_path: Path) -> None:
    for text in (BASE + "[log]\nlevel = " + "1" * 5000 + "\n", BASE + "x = " + "[" * 3000):
        with pytest.raises(config.ConfigError) as e:
            config.load(_file(tmp_path, text))
        assert e.value.problems[0][0] == "(syntax)"


def test_a_file_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    p = tmp_path / "cand.toml"
    p.write_bytes(BASE.encode() + b"#" * (config.MAX_FILE + 1))
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    assert e.value.problems[0][0] == "(file)"
