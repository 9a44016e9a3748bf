"""The mosquitto ACL a D-Router's broker needs, written from cand.toml (`cand mqtt-acl`).

Without an ACL any client may publish any instance's report: pin a dead instance as the best
one, or remove a live one with a fake `down`. The ACL gives each instance its own topic only:
`--instance NAME=D-BID` names a broker credential (password) that may report for that D-BID
alone; with TLS client certificates, `--cert-identity` lets any client report only for the
D-BID that is its certificate's CN (mosquitto's `use_identity_as_username`), so no list of
instances is needed. (A password user cannot be named by its D-BID: mosquitto's password
file separates user and hash with a colon.) The daemon's own user only reads.
Pure: text in, text out."""

from __future__ import annotations

from collections.abc import Sequence

from cand.config import Config
from cand.model import BindingId, ModelError
from cand.wire import mqtt as wire


class AclError(ValueError):
    pass


def parse_instance(text: str) -> tuple[str, BindingId]:
    """`web-1=2001:db8:a::10` -> the credential name and the D-BID it may report for."""
    name, sep, binding = text.partition("=")
    if not sep or not name or any(c in name for c in " \t\n#+/"):
        raise AclError(f"--instance {text!r}: expected NAME=D-BID, NAME without spaces, / + #")
    try:
        return name, BindingId.parse(binding)
    except ModelError as e:
        raise AclError(f"--instance {text!r}: {e}") from None


def render(
    config: Config, instances: Sequence[tuple[str, BindingId]] = (), cert_identity: bool = False
) -> str:
    if not instances and not cert_identity:
        raise AclError("name the instances (--instance NAME=D-BID) or use --cert-identity")
    if config.mqtt is None:
        raise AclError("mqtt: the config has no [mqtt] table, so no broker to write an ACL for")
    prefix = config.mqtt.topic_prefix
    daemon = config.mqtt.username or "cand"
    services = sorted(s.service for s in config.service_specs().values())
    if not services:
        raise AclError("services: no services configured")
    out = [
        f"# mosquitto ACL for D-Router {config.router.id}, written by `cand mqtt-acl`.",
        "# Use with `acl_file` and `allow_anonymous false`.",
        "",
        "# The daemon reads every report of its services and writes nothing.",
        f"user {daemon}",
        *(f"topic read {wire.subscription(prefix, s)}" for s in services),
    ]
    for name, binding in instances:
        out += ["", f"# {name} reports for {binding} only (its Last Will goes there too)."]
        out += [f"user {name}", *(f"topic write {prefix}/{s}/{binding}" for s in services)]
    if cert_identity:
        out += [
            "",
            "# A client with a certificate reports only for the D-BID that is its CN",
            "# (listener option use_identity_as_username true).",
            *(f"pattern write {prefix}/{s}/%u" for s in services),
        ]
    return "\n".join(out) + "\n"
