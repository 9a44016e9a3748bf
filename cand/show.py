"""Tables for people, from the same JSON the API gives scripts.

Metric columns use the CATS names and directions: `L2` is the score 0..10 (higher is better,
with the draft's band: avoid 0-3, medium 4-7, preferred 8-10), `L1` the category scores,
`L0` the raw values, and `load ‰` the fine-grained load the decision shares flows by (0 idle,
1000 saturated: higher is worse)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cand.normalize import band


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def services(data: list[dict[str, Any]]) -> str:
    out = []
    for svc in data:
        head = (
            f"{svc['service']} {svc['name'] or ''} policy={svc['policy']} "
            f"flow-key={svc['flow_key']} timeout={svc['affinity_timeout']}s "
            f"default={svc['default']}"
        )
        rows = [
            (
                i["binding"],
                i["egress"] + (" (local)" if i["local"] else ""),
                i["sid"],
                i["state"],
                _l2(i["l2"]),
                _metrics(i.get("l1") or {}) or None,
                i["load_permille"],
                i["network_cost"] if i.get("reachable", True) else "unreachable",
                i.get("cost_source"),
                i.get("cost_age"),
                _rtt(i.get("cost_measured")),
                i["weight"],
            )
            for i in svc["instances"]
        ]
        headers = ("D-BID", "egress", "SRv6 SID", "state", "L2", "L1", "load ‰", "net cost")
        body = (
            table((*headers, "source", "age s", "probe p50/p99 loss", "weight"), rows)
            if rows
            else "  (no instance: new flows get the default action)"
        )
        out.append(head + "\n" + body)
    return "\n\n".join(out) if out else "no services"


def routes(data: dict[str, Any]) -> str:
    def rows(items: list[dict[str, Any]], extra: str) -> list[tuple[Any, ...]]:
        return [
            (
                r["service"],
                r["binding"],
                r["egress"],
                r["sid"],
                r["state"],
                r["seq"],
                _l2(r["l2"]),
                _metrics(r.get("l1") or {}) or None,
                r["load_permille"],
                _metrics(r["metrics"]),
                r.get(extra),
            )
            for r in items
        ]

    headers = (
        "D-SID",
        "D-BID",
        "egress",
        "SRv6 SID",
        "state",
        "seq",
        "L2",
        "L1",
        "load ‰",
        "L0",
    )
    parts = [
        "Local instances:\n" + table((*headers, "expires"), rows(data["local"], "expires_at")),
        "Received paths:\n" + table((*headers, "peer"), rows(data["received"], "peer")),
    ]
    if data.get("advertised"):
        parts.insert(1, "Advertised:\n" + table((*headers, "-"), rows(data["advertised"], "-")))
    if data.get("egresses"):
        parts.append("Egress network cost:\n" + egresses(data["egresses"]))
    return "\n\n".join(parts)


def egresses(data: list[dict[str, Any]]) -> str:
    rows = [
        (
            e["egress"],
            e["cost"] if e["reachable"] else "unreachable",
            e["source"],
            e["age"],
            " ".join("-" if s["value"] is None else f"{s['value']:g}" for s in e["samples"]),
            _measured(e.get("measured")),
        )
        for e in data
    ]
    return table(
        ("egress", "cost", "source", "age s", "last samples (newest first)", "measured"), rows
    )


def _measured(m: dict[str, Any] | None) -> str:
    """What the egress's source last measured: the probes' window, the IGP's metric."""
    if not m:
        return ""
    if "loss" in m:
        return (
            " ".join(
                f"{k} {'-' if m.get(k) is None else m[k]}" for k in ("p50", "p90", "p99", "jitter")
            )
            + f" loss {m['loss']} ({m.get('results', 0)} probes;"
            + f" sent {m.get('sent', 0)} answered {m.get('received', 0)}"
            + f" lost {m.get('lost', 0)} late {m.get('ignored', 0)})"
        )
    if "metric" in m:
        return f"metric {m['metric']} via {m.get('prefix')}"
    return ""


def _rtt(m: dict[str, Any] | None) -> str | None:
    """The probes' view of an instance's egress, short enough for the services table."""
    if not m or "loss" not in m:
        return None
    p50, p99 = ("-" if m.get(k) is None else f"{m[k]:g}" for k in ("p50", "p99"))
    return f"{p50}/{p99} ms {m['loss']:.0%}"


def bindings(data: list[dict[str, Any]]) -> str:
    rows = [
        (b["flow"], b["flow_key"], b["binding"], b["egress"], b["age"], b["timeout"]) for b in data
    ]
    return table(("flow", "key", "D-BID", "egress", "age s", "timeout s"), rows)


def status(data: dict[str, Any]) -> str:
    lines = [
        f"cand {data['version']}  router {data['router']}  roles {','.join(data['roles'])}  "
        f"up {data['uptime']}s",
        f"services {data['services']}  local instances {data['local_instances']}  "
        f"remote paths {data['remote_paths']}  stale kept {data.get('stale_kept', 0)}  "
        f"queue {data['queue']}",
        "engine: " + " ".join(f"{k}={v}" for k, v in data["engine"].items()),
    ]
    for src in data.get("metric_sources") or []:
        lines.append("metrics: " + " ".join(f"{k}={v}" for k, v in src.items()))
    for part in ("speaker", "dataplane"):
        if data.get(part):
            lines.append(f"{part}: " + " ".join(f"{k}={v}" for k, v in data[part].items()))
    return "\n".join(lines)


def _l2(score: int) -> str:
    """The CATS L2 score with the draft's reading: 0-3 avoid, 4-7 medium, 8-10 preferred."""
    return f"{score} {band(score)}"


def _metrics(m: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in m.items())
