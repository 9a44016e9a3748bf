"""`cand reload` in the engine: services and policies change in place, nothing else moves."""

from dataclasses import replace

from cand.engine import (
    Advertise,
    InstanceReported,
    ProgramService,
    Reconfigured,
    RemoveLocalInstance,
    RemoveService,
    RouteLearned,
    Tick,
    Withdraw,
)
from cand.engine.service_table import ServiceSpec
from cand.model import FlowKeyKind, InstanceState, Metrics
from cand.normalize import Normalization, Scores
from tests.helpers import R2, SVC, SVC2, bid, engine, key, route


def up(n: int, service=SVC, cpu: float = 0.2) -> InstanceReported:  # type: ignore[no-untyped-def]
    return InstanceReported(key(n, service), InstanceState.UP, Metrics(cpu=cpu), 1, ttl=300.0)


def of(effects, kind):  # type: ignore[no-untyped-def]
    return [e for e in effects if isinstance(e, kind)]


def test_an_added_service_is_programmed_and_takes_reports() -> None:
    e = engine()
    e.start()
    assert e.handle(up(1, SVC2), 0.0) == [] and e.counters["rejected_reports"] == 1
    new = replace(e.config, services={**e.config.services, SVC2: ServiceSpec(SVC2)})
    eff = e.handle(Reconfigured(new), 1.0)
    assert SVC2 in [p.entry.service for p in of(eff, ProgramService)]
    assert of(e.handle(up(1, SVC2), 2.0), ProgramService)  # now accepted
    assert e.counters["reconfigured"] == 1


def test_a_removed_service_withdraws_its_instances_and_its_entry() -> None:
    e = engine(services=(SVC, SVC2))
    e.start()
    e.handle(up(1, SVC2), 0.0)
    e.handle(up(2, SVC), 0.0)
    new = replace(e.config, services={SVC: e.config.services[SVC]})
    eff = e.handle(Reconfigured(new), 100.0)
    eff += e.handle(Tick(), 200.0)  # whatever damping held back
    assert [w.key for w in of(eff, Withdraw)] == [key(1, SVC2)]
    assert [r.key for r in of(eff, RemoveLocalInstance)] == [key(1, SVC2)]
    assert [r.service for r in of(eff, RemoveService)] == [SVC2]
    assert key(2, SVC) in e.rib.local and SVC in e.table


def test_a_changed_flow_key_reprograms_the_service_only() -> None:
    e = engine(services=(SVC, SVC2))
    e.start()
    e.handle(RouteLearned("r2", route(1, egress=R2)), 0.0)
    spec = replace(e.config.services[SVC], flow_key=FlowKeyKind.THREE_TUPLE)
    new = replace(e.config, services={**e.config.services, SVC: spec})
    eff = e.handle(Reconfigured(new), 1.0)
    assert [p.entry.service for p in of(eff, ProgramService)] == [SVC]
    assert e.table[SVC].spec.flow_key is FlowKeyKind.THREE_TUPLE


def test_what_needs_a_restart_is_refused_and_nothing_changes() -> None:
    e = engine()
    e.start()
    new = replace(e.config, router=R2)
    assert e.reload_problems(new) == ["router changes only with a restart"]
    bad = replace(e.config, services={SVC: replace(e.config.services[SVC], policy="nope")})
    assert "unknown policy 'nope'" in e.reload_problems(bad)[0]
    assert e.handle(Reconfigured(new), 1.0) == [] and e.config.router != R2
    assert e.counters["reconfigure_refused"] == 1


def test_changed_metric_weights_rescore_known_instances_without_a_report() -> None:
    """`[services.metrics]` changed on reload: what the egress scored is scored again from the
    last L0 it holds, advertised and decided at once; what an instance scored itself stays."""
    even = ServiceSpec(SVC, normalization=Normalization(composition="mean"))
    e = engine(services={SVC: even})
    e.start()
    sessions = Metrics(cpu=0.1, sessions=9, max_sessions=10)  # computing t 0.1, service t 0.9
    own = Metrics(cpu=0.1, scores=Scores(l2=6, composed=6))
    e.handle_many(
        [
            InstanceReported(key(1), InstanceState.UP, sessions, 1, ttl=300.0),
            InstanceReported(key(2), InstanceState.UP, own, 1, ttl=300.0),
        ],
        0.0,
    )
    assert e.rib.local[key(1)].route.metrics.l2 == 5  # (0.1 + 0.9) / 2
    heavy = replace(even, normalization=Normalization(composition="mean", weights={"computing": 3}))
    eff = e.handle(Reconfigured(replace(e.config, services={SVC: heavy})), 10.0)
    sent = {a.route.key: a.route for a in of(eff, Advertise)}
    # (3 * 0.1 + 0.9) / 4 = 0.3: 7, in the same band as 5 and with the same load, so only the
    # reload makes it go out now rather than at the next refresh (t=60)
    assert list(sent) == [key(1)] and sent[key(1)].metrics.l2 == 7
    entry = e.rib.local[key(1)]
    assert entry.route.metrics.l2 == 7 and entry.route.metrics.cpu == 0.1
    assert (entry.updated_at, entry.expires_at) == (0.0, 300.0)  # still the report of t=0
    assert e.rib.local[key(2)].route.metrics.scores == own.scores
    assert {c.binding: c.l2 for c in e.table[SVC].choices} == {bid(1): 7, bid(2): 6}
    assert e.counters["rescored"] == 1
    # the same normalization again: nothing to score, nothing to send
    eff = e.handle(Reconfigured(replace(e.config, services={SVC: heavy})), 20.0)
    assert of(eff, Advertise) == [] and of(e.handle(Tick(), 30.0), Advertise) == []
    # the next report is scored under the new weights, as the reload did
    e.handle(InstanceReported(key(1), InstanceState.UP, sessions, 2, ttl=300.0), 40.0)
    assert e.rib.local[key(1)].route.metrics.l2 == 7
