"""One regression test per hostile-MQTT finding (issue 14): each of these once crashed the
daemon, grew its memory without bound, or let a publisher pin or remove an instance."""

from __future__ import annotations

import logging

import pytest

from cand.adapters.mqtt import MqttMetricSource
from cand.config import ConfigError, MqttConfig, parse
from cand.config import load as parse_file
from cand.engine import Engine, EngineConfig, InstanceReported, RouteLearned, ServiceSpec
from cand.engine.damping import Damper, DampingParams
from cand.engine.rib import RibLimits
from cand.model import BindingId, InstanceKey, InstanceState, Metrics, ModelError
from cand.wire import mqtt as wire
from tests.helpers import R1, R3, SVC, key, route

K = key(1)
TOPIC = wire.topic(K)
NOW = 1_700_000_000.0  # the wall clock the sources under test see


def good(seq: int, epoch: int | None = None, state: InstanceState = InstanceState.UP) -> bytes:
    return wire.encode(state, Metrics(cpu=0.1), seq, NOW, epoch)


def source(clock: list[float] | None = None, **cfg: object) -> MqttMetricSource:
    t = clock if clock is not None else [0.0]
    return MqttMetricSource(
        MqttConfig(**cfg),  # type: ignore[arg-type]
        [SVC],
        clock=lambda: t[0],
        router=R1,
        wall_clock=lambda: NOW,
    )


# --- the payload decoder ---------------------------------------------------------------------

HUGE = "1" + "0" * 400


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (f'{{"v":1,"seq":5,"epoch":5,"ts":{HUGE},"state":"up","metrics":{{}}}}', "range"),
        (f'{{"v":1,"seq":5,"ts":1,"state":"up","metrics":{{"cpu":{HUGE}}}}}', "range"),
        (f'{{"v":1,"seq":{HUGE},"ts":1,"state":"up"}}', "range"),
        ('{"v":1,"seq":5,"ts":1e400,"state":"up"}', "range"),
        ('{"v":1,"seq":5,"ts":1,"state":"up","metrics":{"cpu":-1e400}}', "range"),
        ('{"v":1,"seq":5,"ts":0.' + "1" * 100 + ',"state":"up"}', "range"),
        ('{"v":true,"seq":5,"ts":1,"state":"up"}', "version"),
        ('{"v":1.0,"seq":5,"ts":1,"state":"up"}', "version"),
        ('{"v":1,"seq":5,"ts":1,"state":"up","metrics":{"cpu":null}}', "schema"),
        ('{"v":1,"seq":5,"ts":1,"state":"up","metrics":{"cpu":true}}', "schema"),
        ('{"v":1,"seq":5,"ts":1,"state":"down","state":"up"}', "schema"),
        ('{"v":1,"seq":5,"ts":1,"state":["up"]}', "schema"),
        ('{"v":1,"seq":5,"ts":true,"state":"up"}', "schema"),
        ('{"v":1,"seq":5,"ts":1,"state":"up","metrics":[]}', "schema"),
        ('{"v":1,"seq":5,"ts":Infinity,"state":"up"}', "not_json"),
        ("[" * 3000 + "]" * 3000, "not_json"),
    ],
)
def test_payloads_that_once_crashed_or_slipped_through(payload: str, reason: str) -> None:
    with pytest.raises(wire.PayloadError) as e:
        wire.decode(K, payload.encode(), max_size=1 << 16)
    assert e.value.reason == reason


def test_a_retained_poison_message_is_dropped_not_fatal() -> None:
    s = source()
    poison = f'{{"v":1,"seq":5,"epoch":5,"ts":{HUGE},"state":"up","metrics":{{}}}}'.encode()
    assert s.handle(TOPIC, poison, None, retained=True) is None
    assert s.status()["dropped_range"] == 1
    assert s.handle(TOPIC, good(6), None) is not None  # the real instance goes on


# --- addresses that are not instances --------------------------------------------------------


@pytest.mark.parametrize(
    "binding",
    [
        "::1",
        "fe80::1",
        "fe80::1%eth0",
        "fe80::2%lo with spaces",
        "fe80::1%" + "x" * 30_000,
        "ff02::1",
        "::",
        "::ffff:10.0.0.1",
        "2001:db8:5::1",  # the D-SID itself
        "fc00:ff::1",  # this router
    ],
)
def test_addresses_that_are_not_instances_are_refused(binding: str) -> None:
    s = source()
    assert s.handle(f"dyncast/v1/{SVC}/{binding}", good(5), None) is None
    st = s.status()
    assert st.get("dropped_address", 0) + st.get("dropped_topic", 0) == 1, st
    assert st["instances_tracked"] == 0


@pytest.mark.parametrize("text", ["127.0.0.1", "169.254.1.1", "255.255.255.255", "224.0.0.1"])
def test_ipv4_non_instance_addresses_are_no_d_bid(text: str) -> None:
    with pytest.raises(ModelError):
        BindingId.parse(text)


def test_a_scoped_address_is_not_a_second_instance() -> None:
    with pytest.raises(ModelError):
        InstanceKey(SVC, BindingId.parse("2001:db8:a::1%eth0"))


# --- replay and spoofing ---------------------------------------------------------------------


def test_a_seq_from_the_future_cannot_pin_an_instance() -> None:
    s = source()
    assert s.handle(TOPIC, good(int(NOW * 1000)), None) is not None
    assert s.handle(TOPIC, good(wire.MAX_SEQ), None, retained=True) is None
    assert s.status()["dropped_future"] == 1
    assert s.handle(TOPIC, good(int(NOW * 1000) + 1), None) is not None  # real reports pass


def test_a_fake_down_with_a_future_epoch_is_refused() -> None:
    s = source()
    assert s.handle(TOPIC, good(int(NOW * 1000)), None) is not None
    ahead = int((NOW + 3600) * 1000)
    assert s.handle(TOPIC, good(ahead, ahead, InstanceState.DOWN), None) is None
    assert s.status()["dropped_future"] == 1


def test_a_ts_from_the_future_is_refused() -> None:
    s = source()
    raw = wire.encode(InstanceState.UP, Metrics(), 5, NOW + 3600)
    assert s.handle(TOPIC, raw, None) is None
    assert s.status()["dropped_future"] == 1


def test_expiry_is_capped() -> None:
    s = source(max_expiry=120.0)
    got = s.handle(TOPIC, good(5), 136 * 365 * 86400.0)
    assert got is not None and got.ttl == 120.0


def test_sequence_gaps_are_counted() -> None:
    s = source()
    s.handle(TOPIC, good(100, 100), None)
    s.handle(TOPIC, good(101, 100), None)
    s.handle(TOPIC, good(105, 100), None)  # 102..104 lost
    s.handle(TOPIC, good(200, 200), None)  # a new session: no gap
    st = s.status()
    assert (st["sequence_gaps"], st["reports_missing"]) == (1, 3)


# --- bounded state ---------------------------------------------------------------------------


def test_ten_thousand_bogus_instances_are_capped_then_forgotten() -> None:
    clock = [0.0]
    s = source(clock, max_instances=1000, max_expiry=60.0, default_expiry=30.0)
    for n in range(10_000):
        s.handle(f"dyncast/v1/{SVC}/2001:db8:b::{n + 1:x}", good(5), None)
    st = s.status()
    assert st["instances_tracked"] == 1000 and st["dropped_limit"] == 9000
    clock[0] = 121.0  # twice max_expiry later: all forgotten
    assert s.handle(TOPIC, good(6), None) is not None
    st = s.status()
    assert st["instances_tracked"] == 1 and st["instances_forgotten"] == 1000


def test_the_log_throttle_does_not_keep_every_topic(caplog: pytest.LogCaptureFixture) -> None:
    s = source()
    with caplog.at_level(logging.WARNING, "cand.mqtt"):
        for n in range(5_800):
            s.handle(f"dyncast/v1/{'x' * 1000}/{n}", b"{}", None)
    assert len(s._last_log) <= 2
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and len(logged[0]) < 400  # truncated attacker text


def test_damper_forgets_instances_that_are_gone() -> None:
    dm = Damper(DampingParams(half_life=15.0))
    for n in range(1, 2001):
        dm.offer(key(n), route(n), 0.0)
        dm.offer(key(n), None, 1.0)  # flapped once: a penalty to remember for a while
    assert len(dm) == 2000
    t = 0.0
    while (d := dm.next_deadline()) is not None:
        t = d
        dm.due(t)
    assert len(dm) == 0 and t < 15.0 * 12


def test_engine_caps_instances_per_service_and_per_egress() -> None:
    cfg = EngineConfig(
        router=R1, services={SVC: ServiceSpec(SVC)}, limits=RibLimits(per_service=3, per_egress=5)
    )
    e = Engine(cfg)
    for n in range(1, 6):
        e.handle(InstanceReported(key(n), InstanceState.UP, Metrics(), 1, 30.0), 0.0)
    assert len(e.rib.local) == 3 and e.rib.refused["service_limit"] == 2
    for n in range(10, 20):
        e.handle(RouteLearned("peer", route(n, egress=R3)), 0.0)
    assert e.rib.refused["service_limit"] == 2 + 7  # learned paths have their own 3
    assert len(e.rib.remote) == 3


def test_engine_per_egress_cap_counts_paths_not_peers() -> None:
    cfg = EngineConfig(router=R1, limits=RibLimits(per_service=100, per_egress=2))
    e = Engine(cfg)
    for peer in ("rr1", "rr2"):  # two reflectors giving the same two paths: two instances
        for n in (1, 2):
            e.handle(RouteLearned(peer, route(n, egress=R3)), 0.0)
    assert len(e.rib.remote) == 4 and not e.rib.refused
    e.handle(RouteLearned("rr1", route(3, egress=R3)), 0.0)
    assert e.rib.refused["egress_limit"] == 1


def test_will_grace_must_outlast_the_agents_reconnect() -> None:
    base = {
        "router": {"id": "fc00:ff::1", "roles": ["egress"], "locator": "fc00:0:1::/48"},
        "services": [{"sid": str(SVC)}],
    }
    with pytest.raises(ConfigError, match="will_grace"):
        parse({**base, "mqtt": {"will_grace": 5.0}})
    assert parse({**base, "mqtt": {}}).mqtt.will_grace > wire.AGENT_MAX_RECONNECT  # type: ignore[union-attr]


def test_mqtt_acl_confines_each_named_instance_to_its_topic() -> None:
    from cand import mqtt_acl
    from tests.unit.test_cli import EXAMPLE

    cfg = parse_file(EXAMPLE)
    text = mqtt_acl.render(cfg, [mqtt_acl.parse_instance("web-1=2001:db8:a::10")])
    lines = text.splitlines()
    reader = lines.index(f"user {cfg.mqtt.username}")  # type: ignore[union-attr]
    assert lines[reader + 1].startswith("topic read dyncast/v1/") and "#" not in lines[reader + 1]
    block = lines[lines.index("user web-1") + 1 :]
    writes = [ln for ln in block if ln.startswith("topic write")]
    assert writes and all(ln.endswith("/2001:db8:a::10") for ln in writes)
    assert "pattern" not in text
    assert "pattern write" in mqtt_acl.render(cfg, cert_identity=True)
    for bad in ("web-1", "=2001:db8:a::10", "web 1=2001:db8:a::10", "web-1=::1", "w/1=2001:db8::1"):
        with pytest.raises(mqtt_acl.AclError):
            mqtt_acl.parse_instance(bad)
    with pytest.raises(mqtt_acl.AclError, match="--instance"):
        mqtt_acl.render(cfg)
