import ipaddress

import pytest

from cand.model import (
    Binding,
    BindingId,
    FlowKey,
    FlowKeyKind,
    InstanceKey,
    InstanceRoute,
    Metrics,
    ModelError,
    RouterId,
    ServiceId,
)
from cand.normalize import Scores


def test_ids_parse_compare_and_hash() -> None:
    a = ServiceId.parse("2001:db8::1")
    assert a == ServiceId("2001:db8::1")  # type: ignore[arg-type]
    assert a != BindingId.parse("2001:db8::1")  # same address, other role
    assert len({a, ServiceId.parse("2001:0db8::0001")}) == 1
    assert sorted([a, ServiceId.parse("10.0.0.1")])[0].version == 4
    assert str(a) == "2001:db8::1"


@pytest.mark.parametrize("bad", ["nope", "::", "ff02::1", "224.0.0.1", 7])
def test_service_id_rejects_non_anycast(bad: object) -> None:
    with pytest.raises(ModelError, match="D-SID"):
        ServiceId.parse(bad)


def test_metrics_levels() -> None:
    m = Metrics(cpu=0.2, gpu=0.7, memory=0.5, sessions=30, max_sessions=40, capacity=200)
    loads = m.loads()
    assert loads.compute == 0.7 and loads.memory == 0.5 and loads.sessions == 0.75
    assert m.load == 0.75 and m.load_permille == 750
    assert m.spare == pytest.approx(50.0)
    # CATS scores, higher is better: computing 0.7 -> 3, service 0.75 -> 3 (2.5 rounds up)
    assert m.l1() == {"computing": 3, "service": 3} and m.l2 == 3
    assert Metrics().load_permille == 0 and Metrics().l2 == 10  # nothing reported: idle


def test_an_instance_that_gives_only_its_l2_is_as_busy_as_it_says() -> None:
    m = Metrics(scores=Scores(l2=8, service=8))
    assert m.l2 == 8 and m.l1() == {"service": 8}
    assert m.load == pytest.approx(0.2) and m.load_permille == 200
    # given scores win over the default normalization of the L0 values
    assert Metrics(cpu=0.9, scores=Scores(l2=7)).l2 == 7
    assert Metrics(cpu=0.9).l2 == 1


def test_delay_is_l0_in_milliseconds() -> None:
    assert Metrics(delay=12.3456).delay == 12.346
    assert Metrics(delay=500).l1() == {"service": 5}
    for bad in (-1, float("inf"), True, 4e6):
        with pytest.raises(ModelError, match=r"metrics\.delay"):
            Metrics(delay=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"cpu": 1.5}, "cpu"),
        ({"cpu": float("nan")}, "cpu"),
        ({"memory": -0.1}, "memory"),
        ({"sessions": -1}, "sessions"),
        ({"sessions": 1.5}, "sessions"),
        ({"capacity": 0}, "capacity"),
        ({"max_sessions": 0}, "max_sessions"),
        ({"cpu": True}, "cpu"),
    ],
)
def test_metrics_validation_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ModelError, match=f"metrics.{field}"):
        Metrics(**kw)  # type: ignore[arg-type]


def test_metrics_round_to_per_mille() -> None:
    assert Metrics(cpu=0.12345).cpu == 0.123


def test_route_requires_same_family() -> None:
    with pytest.raises(ModelError, match="same IP version"):
        InstanceRoute(
            key=InstanceKey(ServiceId.parse("10.0.0.1"), BindingId.parse("2001:db8::1")),
            egress=RouterId.parse("fc00::1"),
            sid=None,
            metrics=Metrics(),
        )


def test_stable_hash_is_stable_and_distinct() -> None:
    k1 = InstanceKey(ServiceId.parse("2001:db8::1"), BindingId.parse("2001:db8:a::1"))
    k2 = InstanceKey(ServiceId.parse("2001:db8::1"), BindingId.parse("2001:db8:a::2"))
    # Golden: path ids and SIDs on the wire come from this; a change renumbers every router.
    assert k1.stable_hash(4) == 0x59D24829
    assert k1.stable_hash(4) != k2.stable_hash(4)
    assert 0 <= k1.stable_hash(4) < 2**32


def test_flow_keys() -> None:
    svc = ServiceId.parse("2001:db8::1")
    client = ipaddress.ip_address("2001:db8:c::1")
    five = FlowKey(client, svc, 6, 40000, 80)
    three = FlowKey(client, svc, 6)
    assert five.kind is FlowKeyKind.FIVE_TUPLE and three.kind is FlowKeyKind.THREE_TUPLE
    with pytest.raises(ModelError, match="both ports"):
        FlowKey(client, svc, 6, 40000, None)
    with pytest.raises(ModelError, match="port"):
        FlowKey(client, svc, 6, 70000, 80)
    b = Binding(five, BindingId.parse("2001:db8:a::1"), RouterId.parse("fc00::3"), 10, 20, 5)
    assert b.expired(26) and not b.expired(24)
