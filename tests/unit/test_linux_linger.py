"""A tunnel whose instance left the service keeps its route for the flows bound to it, for a
while (pure part of the Linux data plane, fake clock)."""

import ipaddress

from cand.adapters.linux import LinuxDataplane, LinuxOptions
from cand.adapters.linux_slots import Tunnel
from cand.engine.service_table import ServiceEntry, ServiceSpec
from cand.model import RouterId
from tests.helpers import SVC

SID = ipaddress.IPv6Address("fc00:0:3::1")


def test_an_unwanted_tunnel_lingers_then_goes() -> None:
    now = [0.0]
    dp = LinuxDataplane(
        LinuxOptions(linger=300.0), RouterId.parse("fc00:1::1"), clock=lambda: now[0]
    )
    dp.entries[SVC] = ServiceEntry(ServiceSpec(SVC, affinity_timeout=600.0), ())
    mark = dp.slots.assign(Tunnel(SVC, SID))
    dp.routes[mark] = object()  # type: ignore[assignment]  # installed
    want: dict[int, object] = {}
    dp._linger(want)  # type: ignore[arg-type]
    assert want == {mark: Tunnel(SVC, SID)} and dp.status()["lingering"] == 1
    now[0] = 299.0
    want = {}
    dp._linger(want)  # type: ignore[arg-type]
    assert mark in want
    now[0] = 300.0
    want = {}
    dp._linger(want)  # type: ignore[arg-type]
    assert want == {} and dp.lingering == {}  # removed with the next batch


def test_wanted_again_it_stops_lingering() -> None:
    now = [0.0]
    dp = LinuxDataplane(LinuxOptions(), RouterId.parse("fc00:1::1"), clock=lambda: now[0])
    dp.entries[SVC] = ServiceEntry(ServiceSpec(SVC), ())
    mark = dp.slots.assign(Tunnel(SVC, SID))
    dp.routes[mark] = object()  # type: ignore[assignment]
    dp._linger({})
    assert dp.lingering
    dp._linger({mark: Tunnel(SVC, SID)})
    assert dp.lingering == {}


def test_a_removed_service_takes_its_tunnels_at_once() -> None:
    dp = LinuxDataplane(LinuxOptions(), RouterId.parse("fc00:1::1"), clock=lambda: 0.0)
    mark = dp.slots.assign(Tunnel(SVC, SID))
    dp.routes[mark] = object()  # type: ignore[assignment]
    want: dict[int, object] = {}
    dp._linger(want)  # type: ignore[arg-type]
    assert want == {} and dp.lingering == {}
