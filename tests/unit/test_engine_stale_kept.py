"""A service's last stale paths outlive an early End-of-RIB. After `clear bgp *` on a route
reflector, the reflector comes back empty and sends End-of-RIB before its clients' paths are
back (their sessions return seconds apart): dropping every stale path then steered the service
to no instance. Such paths stay stale until something fresh for their service arrives, or
their graceful-restart time ends; where the service has something else, the End-of-RIB drops
them as before."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.engine import (
    Event,
    InstanceReported,
    PeerDown,
    PeerSynced,
    ProgramService,
    RouteLearned,
    RouteWithdrawn,
    Tick,
)
from cand.model import InstanceState, Metrics
from tests.helpers import R2, R3, SVC, SVC2, engine, key, route

GR = 60.0


def weights(e, service=SVC):  # type: ignore[no-untyped-def]
    entry = e.table.get(service)
    return set(entry.weights) if entry is not None else set()


def report(n: int):  # type: ignore[no-untyped-def]
    return InstanceReported(key(n), InstanceState.UP, Metrics(cpu=0.1), 1, ttl=30.0)


def reflector_reset(e, at: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    """Two instances behind two egresses via one reflector, which then resets and comes
    back empty: PeerDown, the session up again, End-of-RIB with nothing sent."""
    e.handle(RouteLearned("rr", route(2, egress=R2)), 0.0)
    e.handle(RouteLearned("rr", route(3, egress=R3)), 0.0)
    e.handle(PeerDown("rr", stale_for=GR), at)
    e.handle(PeerSynced("rr"), at + 1.0)


def test_a_service_with_only_stale_paths_survives_end_of_rib() -> None:
    e = engine()
    reflector_reset(e)
    assert weights(e) == {key(2).binding, key(3).binding}
    assert e.rib.stale_kept() == 2
    assert all(x.stale_until == 1.0 + GR for x in e.rib.remote.values())
    assert e.next_deadline() == 1.0 + GR


def test_a_fresh_path_from_another_peer_drops_the_stale_ones_as_before() -> None:
    e = engine()
    e.handle(RouteLearned("rr1", route(2, egress=R2)), 0.0)
    e.handle(RouteLearned("rr2", route(3, egress=R3)), 0.0)
    e.handle(PeerDown("rr1", stale_for=GR), 1.0)
    eff = e.handle(PeerSynced("rr1"), 2.0)
    assert [x.entry.service for x in eff if isinstance(x, ProgramService)] == [SVC]
    assert weights(e) == {key(3).binding}
    assert e.rib.stale_kept() == 0 and len(e.rib.remote) == 1


def test_a_local_instance_counts_as_something_fresh() -> None:
    e = engine()
    e.handle(report(1), 0.0)
    e.handle(RouteLearned("rr", route(2, egress=R2)), 0.0)
    e.handle(PeerDown("rr", stale_for=GR), 1.0)
    e.handle(PeerSynced("rr"), 2.0)
    assert weights(e) == {key(1).binding}
    assert e.rib.stale_kept() == 0 and not e.rib.remote


def test_kept_paths_expire_at_their_stale_time() -> None:
    e = engine()
    reflector_reset(e)
    assert e.handle(Tick(), GR) == []  # not yet
    eff = e.handle(Tick(), 1.0 + GR)
    (prog,) = [x for x in eff if isinstance(x, ProgramService)]
    assert prog.entry.choices == ()
    assert e.rib.stale_kept() == 0 and not e.rib.remote
    assert e.next_deadline() is None


def test_a_later_fresh_path_removes_the_kept_ones() -> None:
    e = engine()
    reflector_reset(e)
    # dr2's session to the reflector is back first: its path is reflected, fresh
    e.handle(RouteLearned("rr", route(2, egress=R2, seq=2)), 12.0)
    assert weights(e) == {key(2).binding}
    assert e.rib.stale_kept() == 0
    assert [x.stale_until for x in e.rib.remote.values()] == [None]
    assert e.next_deadline() is None


def test_a_kept_path_sent_again_is_fresh_and_stays() -> None:
    e = engine()
    reflector_reset(e)
    e.handle(RouteLearned("rr", route(3, egress=R3)), 12.0)  # the same path, sent again
    assert weights(e) == {key(3).binding}
    ((_, entry),) = e.rib.remote.items()
    assert entry.stale_until is None and e.rib.stale_kept() == 0


def test_a_later_local_instance_removes_the_kept_ones() -> None:
    e = engine()
    reflector_reset(e)
    e.handle(report(1), 5.0)
    assert weights(e) == {key(1).binding}
    assert e.rib.stale_kept() == 0 and not e.rib.remote


def test_another_reset_does_not_lengthen_a_kept_path() -> None:
    e = engine()
    reflector_reset(e)
    e.handle(PeerDown("rr", stale_for=GR), 20.0)
    assert {x.stale_until for x in e.rib.remote.values()} == {1.0 + GR}
    e.handle(PeerSynced("rr"), 21.0)
    assert e.rib.stale_kept() == 2
    e.handle(Tick(), 1.0 + GR)
    assert not e.rib.remote


def test_each_service_is_judged_on_its_own() -> None:
    e = engine(services=(SVC, SVC2))
    e.handle(RouteLearned("rr", route(2, egress=R2)), 0.0)
    e.handle(RouteLearned("rr", route(4, egress=R2, service=SVC2)), 0.0)
    e.handle(RouteLearned("other", route(5, egress=R3, service=SVC2)), 0.0)
    e.handle(PeerDown("rr", stale_for=GR), 1.0)
    e.handle(PeerSynced("rr"), 2.0)
    assert weights(e, SVC) == {key(2).binding}  # kept: nothing else
    assert weights(e, SVC2) == {key(5, SVC2).binding}  # dropped: "other" has a fresh one
    assert e.rib.stale_kept() == 1


def test_a_withdrawn_kept_path_is_no_longer_counted() -> None:
    e = engine()
    reflector_reset(e)
    e.handle(RouteWithdrawn("rr", key(2), R2), 5.0)
    assert e.rib.stale_kept() == 1 and weights(e) == {key(3).binding}


def test_cand_status_shows_stale_kept(tmp_path: Path) -> None:
    from cand import show
    from cand.daemon import Daemon
    from cand.wiring import build_adapters
    from tests.integration.harness import daemon_config

    router = {"id": "fc00:ff::1", "roles": ["ingress", "egress"], "locator": "fc00:0:1::/48"}
    cfg = daemon_config(tmp_path, router=router)
    d = Daemon(cfg, build_adapters(cfg))
    reflector_reset(d.engine)
    assert d.status()["stale_kept"] == 2
    assert "stale kept 2" in show.status(d.status())


# --- whatever happens: a kept path is stale, counted, and only where its service had nothing

peers = st.sampled_from(["rr1", "rr2"])
numbers = st.integers(1, 4)


@st.composite
def events(draw: st.DrawFn) -> list[tuple[float, Event]]:
    out: list[tuple[float, Event]] = []
    now = 0.0
    for _ in range(draw(st.integers(1, 30))):
        now += draw(st.sampled_from([0.0, 1.0, 7.0]))
        n = draw(numbers)
        egress = R2 if n % 2 else R3
        svc = draw(st.sampled_from([SVC, SVC2]))
        ev: Event = draw(
            st.sampled_from(
                [
                    RouteLearned(draw(peers), route(n, egress=egress, service=svc)),
                    RouteWithdrawn(draw(peers), key(n, svc), egress),
                    PeerDown(draw(peers), stale_for=draw(st.sampled_from([0.0, 10.0]))),
                    PeerSynced(draw(peers)),
                    InstanceReported(
                        key(n, svc),
                        draw(st.sampled_from([InstanceState.UP, InstanceState.DOWN])),
                        Metrics(cpu=0.5),
                        int(now) + 1,
                        ttl=30.0,
                    ),
                    Tick(),
                ]
            )
        )
        out.append((now, ev))
    return out


@settings(max_examples=300, deadline=None)
@given(events())
def test_kept_paths_are_stale_counted_and_alone(evs: list[tuple[float, Event]]) -> None:
    e = engine(services=(SVC, SVC2))
    for now, ev in evs:
        e.handle(ev, now)
        rib = e.rib
        kept = {rk for keys in rib._kept.values() for rk in keys}
        assert rib.stale_kept() == len(kept)
        for rk in kept:
            assert rk in rib.remote and rib.remote[rk].stale_until is not None
            assert rib.remote[rk].stale_until > now or not isinstance(ev, Tick)
        for service in {rk[1].service for rk in kept}:
            # a kept path is never beside a fresh path or a local instance of its service
            assert not any(k.service == service for k in rib.local)
            assert all(
                rib.remote[rk].stale_until is not None
                for rk in rib.remote
                if rk[1].service == service
            )
        if isinstance(ev, PeerSynced):  # after its End-of-RIB, a peer's stale paths are kept
            for rk, entry in rib.remote.items():
                if rk[0] == ev.peer and entry.stale_until is not None:
                    assert rk in kept


def test_a_resync_without_a_path_leaves_the_choice_to_peer_synced() -> None:
    """The GoBGP speaker's whole-table read after a session came back: a path missing from
    it is no withdrawal (that would drop it before the End-of-RIB could keep it)."""
    from cand.speaker.adj_rib_in import AdjRibIn

    rib = AdjRibIn("rr")
    a, b = route(2, egress=R2), route(3, egress=R3)
    e = engine()
    for ch in rib.replace({(a.key, a.egress): a, (b.key, b.egress): b}, None):
        e.handle(ch, 0.0)
    e.handle(PeerDown("rr", stale_for=GR), 1.0)
    changes = rib.resync({})  # the reflector came back empty
    assert changes == []
    for ch in changes:
        e.handle(ch, 2.0)
    e.handle(PeerSynced("rr"), 2.0)
    assert weights(e) == {key(2).binding, key(3).binding} and e.rib.stale_kept() == 2
    # dr2's path is reflected again: learned (the view forgot it), and the kept one goes
    (learned,) = rib.resync({(a.key, a.egress): a})
    e.handle(learned, 12.0)
    assert weights(e) == {key(2).binding} and e.rib.stale_kept() == 0
