"""The adj-RIB-out reconciler: whatever the speaker holds, applying the diff gives exactly
what is wanted, sends nothing already right, and a second diff is empty."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cand.model import InstanceKey, InstanceRoute
from cand.speaker.adj_rib_out import AdjRibOut, apply, reconcile
from tests.helpers import R2, R3, SVC, SVC2, route

routes = st.builds(
    lambda n, egress, cpu, service, seq: route(n, egress=egress, cpu=cpu, service=service, seq=seq),
    st.integers(1, 6),
    st.sampled_from([R2, R3]),
    st.sampled_from([0.1, 0.5]),
    st.sampled_from([SVC, SVC2]),
    st.integers(0, 2),
)
ribs = st.lists(routes, max_size=10).map(lambda rs: {r.key: r for r in rs})


@given(ribs, ribs)
@settings(max_examples=400)
def test_applying_the_diff_to_actual_yields_desired(
    desired: dict[InstanceKey, InstanceRoute], actual: dict[InstanceKey, InstanceRoute]
) -> None:
    diff = reconcile(desired, actual)
    assert apply(actual, diff) == desired
    assert reconcile(desired, apply(actual, diff)).announce == ()
    assert reconcile(desired, apply(actual, diff)).withdraw == ()
    # minimal: nothing already right is sent, nothing wanted is withdrawn
    assert all(actual.get(k) != v for k, v in diff.announce)
    assert not set(diff.withdraw) & set(desired)


@given(st.lists(st.tuples(st.booleans(), routes), max_size=30), ribs)
@settings(max_examples=200)
def test_the_adj_rib_out_follows_advertise_and_withdraw(
    script: list[tuple[bool, InstanceRoute]], actual: dict[InstanceKey, InstanceRoute]
) -> None:
    rib = AdjRibOut()
    model: dict[InstanceKey, InstanceRoute] = {}
    for advertise, r in script:
        if advertise:
            rib.set(r)
            model[r.key] = r
        else:
            rib.remove(r.key)
            model.pop(r.key, None)
    assert rib.routes() == model
    assert apply(actual, rib.diff(actual)) == model
