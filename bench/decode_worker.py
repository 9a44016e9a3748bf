"""Would a worker process decoding received paths help the ingress learn faster (issue 18)?

The paths GoBGP hands over (NLRI and attribute bytes, 10k D-SIDs x 12 instances, two
egresses) are decoded here three ways, on this machine: in this process (what the speaker
does, the baseline); the result's unpickling alone (the least the event loop would still pay
if a worker decoded and sent the routes back); and through one worker process, bytes in and
pickled routes out, in chunks, as wall time. No network, no lock needed.

    .venv/bin/python -m bench.decode_worker [--services 10000] [--instances 12]
"""

from __future__ import annotations

import argparse
import ipaddress
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from bench.common import save, table
from cand.model import BindingId, InstanceKey, InstanceRoute, Metrics, RouterId, ServiceId
from cand.wire import bgp, bgp_update

ASN = 65000
EGRESSES = [RouterId.parse("fc00:a::3"), RouterId.parse("fc00:a::4")]
CHUNK = 4096
Path_ = tuple[bytes, tuple[bytes, ...]]


def paths(services: int, instances: int) -> list[Path_]:
    """Each route as gobgpd's ListPath hands it on: NLRI bytes, one element per attribute."""
    as_path = bgp.Attribute(bgp.TRANSITIVE, bgp.AS_PATH, b"")
    local_pref = bgp.Attribute(bgp.TRANSITIVE, bgp.LOCAL_PREF, (100).to_bytes(4, "big"))
    base_s, base_b = (
        int(ipaddress.IPv6Address("2001:db8:5::")),
        int(ipaddress.IPv6Address("2001:db8:a::")),
    )
    base_sid = int(ipaddress.IPv6Address("fc00:0:3::"))
    out = []
    for s in range(services):
        svc = ServiceId(ipaddress.IPv6Address(base_s + s + 1))
        for j in range(instances):
            n = s * 16 + j
            r = InstanceRoute(
                InstanceKey(svc, BindingId(ipaddress.IPv6Address(base_b + n))),
                EGRESSES[j % 2],
                ipaddress.IPv6Address(base_sid + n),
                Metrics(cpu=(j % 10) / 10, capacity=100),
            )
            attrs = [bgp.mp_reach(r, addpath=False), *bgp.encode_attributes(r, ASN), as_path,
                     local_pref]  # fmt: skip
            attrs.sort(key=lambda a: a.type)
            out.append((bgp.host_prefix(svc), tuple(a.to_bytes() for a in attrs)))
    return out


def decode(chunk: list[Path_]) -> list[InstanceRoute]:
    return [bgp_update.decode_path(n, a, bgp_update.AFI_IP6, ASN) for n, a in chunk]


def decode_pickled(chunk: list[Path_]) -> bytes:
    return pickle.dumps(decode(chunk), protocol=5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--instances", type=int, default=12)
    a = ap.parse_args()
    ps = paths(a.services, a.instances)
    n = len(ps)
    t = time.perf_counter()
    routes = decode(ps)
    t_in = time.perf_counter() - t
    blob = pickle.dumps(routes, protocol=5)
    t = time.perf_counter()
    pickle.loads(blob)
    t_unpickle = time.perf_counter() - t
    bgp_update.clear_memos()
    chunks = [ps[i : i + CHUNK] for i in range(0, n, CHUNK)]
    with ProcessPoolExecutor(1) as ex:
        ex.submit(decode, ps[:8]).result()  # the worker is started before the clock
        t = time.perf_counter()
        got: list[InstanceRoute] = []
        for b in ex.map(decode_pickled, chunks):
            got += pickle.loads(b)
        t_worker = time.perf_counter() - t
    assert got == routes
    rows = [
        ("decoded in this process (today)", t_in, t_in / n * 1e6),
        ("unpickling the decoded routes alone", t_unpickle, t_unpickle / n * 1e6),
        ("one worker: bytes in, routes out (wall)", t_worker, t_worker / n * 1e6),
    ]
    print(f"Decoding {n} received paths")
    print(table(("how", "s", "us per path"), rows))
    save(
        "decode_worker",
        {
            "command": "python -m bench.decode_worker " + " ".join(sys.argv[1:]),
            "paths": n,
            "in_process_s": t_in,
            "unpickle_s": t_unpickle,
            "worker_wall_s": t_worker,
        },
    )


if __name__ == "__main__":
    main()
