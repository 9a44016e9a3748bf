import ipaddress

from cand.engine import (
    Advertise,
    CostChanged,
    InstanceReported,
    MetricsReachable,
    PeerDown,
    PeerSynced,
    ProgramLocalInstance,
    ProgramService,
    RemoveLocalInstance,
    RouteLearned,
    RouteWithdrawn,
    Tick,
    Withdraw,
)
from cand.model import InstanceState, Metrics
from tests.helpers import R1, R2, R3, SVC, SVC2, engine, key, route


def report(n: int, state: InstanceState = InstanceState.UP, seq: int = 1, **m: float):  # type: ignore[no-untyped-def]
    return InstanceReported(key(n), state, Metrics(**m), seq, ttl=30.0)  # type: ignore[arg-type]


def of(effects, kind):  # type: ignore[no-untyped-def]
    return [e for e in effects if isinstance(e, kind)]


def test_start_programs_every_configured_service_empty() -> None:
    eff = engine(services=(SVC, SVC2)).start()
    assert [e.entry.service for e in of(eff, ProgramService)] == [SVC, SVC2]
    assert all(e.entry.choices == () for e in eff)


def test_local_report_programs_sid_advertises_and_steers() -> None:
    e = engine()
    eff = e.handle(report(1, cpu=0.3), 0.0)
    (sid,) = of(eff, ProgramLocalInstance)
    assert sid.sid in ipaddress.IPv6Network("fc00:0:1::/48")
    (adv,) = of(eff, Advertise)
    assert adv.route.egress == R1 and adv.route.sid == sid.sid and adv.route.seq == 1
    (prog,) = of(eff, ProgramService)
    assert prog.entry.weights == {key(1).binding: 1000}
    assert prog.entry.choices[0].local


def test_sid_is_stable_across_engines() -> None:
    assert engine().sid_for(key(1)) == engine().sid_for(key(1))
    assert engine().sid_for(key(1)) != engine().sid_for(key(2))


def test_reports_for_unconfigured_services_and_old_sequences_are_refused() -> None:
    e = engine(services=(SVC2,))
    assert e.handle(report(1), 0.0) == []
    assert e.counters["rejected_reports"] == 1
    e = engine()
    e.handle(report(1, seq=5), 0.0)
    assert e.handle(report(1, seq=4, cpu=0.9), 0.1) == []
    assert e.counters["stale_reports"] == 1


def test_down_withdraws_and_removes_sid_at_once() -> None:
    e = engine()
    e.handle(report(1), 0.0)
    eff = e.handle(report(1, InstanceState.DOWN, seq=2), 0.05)
    assert of(eff, Withdraw) == [Withdraw(key(1))]
    assert len(of(eff, RemoveLocalInstance)) == 1
    assert of(eff, ProgramService)[0].entry.choices == ()


def test_silent_instance_expires_unless_broker_is_lost() -> None:
    e = engine()
    e.handle(report(1), 0.0)  # ttl 30
    assert e.next_deadline() == 30.0
    e.handle(MetricsReachable(False), 10.0)
    assert e.handle(Tick(), 100.0) == []  # broker lost: silence means nothing
    e.handle(MetricsReachable(True, grace=5.0), 100.0)
    eff = e.handle(Tick(), 105.0)
    assert of(eff, Withdraw) == [Withdraw(key(1))]


def test_ingress_steers_remote_paths_by_cost() -> None:
    e = engine(egress=False)
    e.handle(RouteLearned("rr", route(1, egress=R2, cpu=0.5)), 0.0)
    eff = e.handle(RouteLearned("rr", route(2, egress=R3, cpu=0.5)), 0.0)
    assert of(eff, ProgramService)[0].entry.weights == {key(1).binding: 500, key(2).binding: 500}
    eff = e.handle(CostChanged(R3, 30.0), 1.0)
    w = of(eff, ProgramService)[0].entry.weights
    assert w[key(1).binding] > w[key(2).binding]
    assert e.handle(CostChanged(R3, 30.0), 2.0) == []  # same cost: nothing to do


def test_withdraw_and_own_reflected_paths() -> None:
    e = engine()
    assert e.handle(RouteLearned("rr", route(1, egress=R1)), 0.0) == []  # ours, reflected
    e.handle(RouteLearned("rr", route(2)), 0.0)
    eff = e.handle(RouteWithdrawn("rr", key(2), R3), 1.0)
    assert of(eff, ProgramService)[0].entry.choices == ()
    assert e.handle(RouteWithdrawn("rr", key(2), R3), 1.0) == []


def test_graceful_restart_keeps_paths_until_stale_time() -> None:
    e = engine()
    e.handle(RouteLearned("rr", route(2)), 0.0)
    assert e.handle(PeerDown("rr", stale_for=60), 1.0) == []
    assert e.table[SVC].weights == {key(2).binding: 1000}
    # peer back, re-sends the path, End-of-RIB: nothing moves
    e.handle(RouteLearned("rr", route(2)), 5.0)
    assert e.handle(PeerSynced("rr"), 6.0) == []
    assert e.table[SVC].weights == {key(2).binding: 1000}
    # a second outage that never recovers: gone after the stale time
    e.handle(PeerDown("rr", stale_for=60), 10.0)
    assert e.next_deadline() == 70.0
    eff = e.handle(Tick(), 70.0)
    assert of(eff, ProgramService)[0].entry.choices == ()


def test_peer_down_without_graceful_restart_drops_at_once() -> None:
    e = engine()
    e.handle(RouteLearned("rr", route(2)), 0.0)
    eff = e.handle(PeerDown("rr"), 1.0)
    assert of(eff, ProgramService)[0].entry.choices == ()


def test_local_report_beats_remote_copy_of_same_instance() -> None:
    e = engine()
    e.handle(RouteLearned("rr", route(1, egress=R3, cpu=0.9, seq=99)), 0.0)
    e.handle(report(1, cpu=0.1), 0.0)
    (choice,) = e.table[SVC].choices
    assert choice.local and choice.load_permille == 100 and choice.l2 == 9


def test_egress_only_router_programs_no_service() -> None:
    e = engine(ingress=False)
    eff = e.handle(report(1), 0.0)
    assert of(eff, ProgramService) == [] and len(of(eff, Advertise)) == 1


def test_egress_scores_l0_under_the_services_normalization() -> None:
    from cand.engine.service_table import ServiceSpec
    from cand.normalize import Normalization, Scores

    tight = ServiceSpec(SVC, normalization=Normalization(bounds={"cpu": (0.0, 0.5)}))
    e = engine(services={SVC: tight})
    (adv,) = of(e.handle(report(1, cpu=0.25), 0.0), Advertise)
    assert adv.route.metrics.scores == Scores(l2=5, computing=5)  # default bounds: 8
    assert adv.route.metrics.load_permille == 250
    # an instance that scored itself keeps its own score
    ev = InstanceReported(key(2), InstanceState.UP, Metrics(cpu=0.25, scores=Scores(l2=9)), 1, 30.0)
    (adv,) = of(e.handle(ev, 0.0), Advertise)
    assert adv.route.metrics.scores == Scores(l2=9)
