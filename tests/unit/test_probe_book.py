"""The probe source's pure core on a fake clock: send schedule and its bounds, RTT
percentiles, jitter, loss, the cost it makes and when an egress becomes unusable."""

from __future__ import annotations

import itertools
import random

import pytest

from cand.engine.probe import ProbeBook, ProbeParams, TokenBucket, percentile
from tests.helpers import R1, R2, R3


def drive(book: ProbeBook, end: float, answer: dict, now: float = 0.0) -> list:
    """Step the book through its deadlines to `end`, answering each probe after
    `answer[egress]` ms (None: never). Returns every report (time, egress, value)."""
    reports = []
    pending: list[tuple[float, object, int, float]] = []
    for _ in range(100_000):
        times = [d for d in (book.next_deadline(),) if d is not None]
        times += [t for t, *_ in pending]
        t = min(times, default=end)
        if t > end:
            return reports
        for item in [p for p in pending if p[0] <= t]:
            pending.remove(item)
            _, egress, seq, rtt = item
            book.reply(egress, seq, rtt, t)
        book.expire(t)
        for egress, seq in book.due_sends(t):
            rtt = answer.get(egress)
            if rtt is not None:
                pending.append((t + rtt / 1000, egress, seq, rtt))
        reports += [(t, e, v) for e, v in book.reports(t)]
    raise AssertionError("the book never settles")


def test_percentile_nearest_rank() -> None:
    v = [float(x) for x in range(1, 101)]
    assert percentile(v, 50) == 50.0
    assert percentile(v, 90) == 90.0
    assert percentile(v, 99) == 99.0
    assert percentile(v, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_rate_per_egress_with_jitter() -> None:
    book = ProbeBook(ProbeParams(rate=10, jitter=0.2, max_total_rate=1000), random.Random(1))
    book.set_targets([R2], 0.0)
    sends: list[float] = []
    t = 0.0
    while t < 100:
        t = book.next_deadline() or 0.0
        sends += [t for _ in book.due_sends(t)]
        book.expire(t)
        book.reports(t)
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert 990 <= len(sends) <= 1010  # 10 a second
    assert min(gaps) >= 0.08 - 1e-9 and max(gaps) <= 0.12 + 1e-9  # +-20 %
    assert max(gaps) - min(gaps) > 0.03  # and the jitter is there


def test_total_rate_is_capped_however_many_egresses() -> None:
    from cand.model import RouterId

    many = [RouterId.parse(f"fc00:ff::{n:x}") for n in range(1, 101)]
    book = ProbeBook(ProbeParams(rate=10, jitter=0.5, max_total_rate=50), random.Random(2))
    book.set_targets(many, 0.0)
    assert book.interval() == pytest.approx(2.0)  # 100 egresses at 50/s: each every 2 s
    sent: list[float] = []
    t = 0.0
    while t < 60:
        t = book.next_deadline() or 0.0
        sent += [t for _ in book.due_sends(t)]
        book.expire(t)
        book.reports(t)
    # never more than the cap over any second (plus the bucket's small burst)
    for start in range(0, 59):
        assert sum(1 for s in sent if start <= s < start + 1) <= 50 + 5
    assert 50 * 60 * 0.9 <= len(sent) <= 50 * 60 + 5


def test_new_targets_are_spread_over_one_interval() -> None:
    book = ProbeBook(ProbeParams(rate=1, max_total_rate=100), random.Random(3))
    book.set_targets([R1, R2, R3], 10.0)
    firsts = sorted(book._egresses[r].next_send for r in (R1, R2, R3))
    assert all(10.0 <= f < 11.0 for f in firsts) and len(set(firsts)) == 3


def test_rtt_percentiles_jitter_and_cost() -> None:
    book = ProbeBook(ProbeParams(rate=10, window=5, report_interval=0.5), random.Random(4))
    book.set_targets([R2], 0.0)
    reports = drive(book, 10.0, {R2: 12.0})
    assert reports and all(v == pytest.approx(12.0) for _, _, v in reports)
    # at most one report per 0.5 s
    times = [t for t, _, _ in reports]
    assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(times))
    st = book.stats(R2, 10.0)
    assert st is not None
    assert st["p50"] == st["p99"] == 12.0 and st["jitter"] == 0.0 and st["loss"] == 0.0
    assert 45 <= st["results"] <= 55  # 5 s at 10/s


def test_jitter_is_the_mean_difference_of_consecutive_rtts() -> None:
    book = ProbeBook(ProbeParams(rate=10), random.Random(5))
    book.set_targets([R2], 0.0)
    rtts = [10.0, 14.0, 10.0, 16.0]
    t = 0.0
    for rtt in rtts:
        t = book.next_deadline() or 0.0
        ((egress, seq),) = book.due_sends(t)
        assert book.reply(egress, seq, rtt, t + 0.01)
    st = book.stats(R2, t + 0.01)
    assert st is not None
    assert st["jitter"] == pytest.approx((4 + 4 + 6) / 3, abs=1e-3)
    assert st["p50"] == 10.0 and st["p90"] == 16.0


def test_lost_probes_raise_the_cost() -> None:
    p = ProbeParams(rate=10, timeout=0.5, loss_penalty=100.0, unusable_loss=0.5)
    book = ProbeBook(p, random.Random(6))
    book.set_targets([R2], 0.0)
    rng = random.Random(7)
    t, lost = 0.0, 0
    while t < 20:
        t = book.next_deadline() or 0.0
        book.expire(t)
        for egress, seq in book.due_sends(t):
            if rng.random() < 0.2:  # a fifth lost
                lost += 1
            else:
                book.reply(egress, seq, 10.0, t + 0.002)
        book.reports(t)
    st = book.stats(R2, t)
    assert st is not None and 0.05 < st["loss"] < 0.4
    value = book._value(book._egresses[R2], t)
    assert value is not None
    assert value == (True, pytest.approx(10.0 + 100.0 * st["loss"], abs=0.01))


def test_black_hole_makes_the_egress_unusable_within_the_window_and_back() -> None:
    p = ProbeParams(rate=10, timeout=0.5, window=2.0, unusable_loss=0.5, min_probes=3)
    book = ProbeBook(p, random.Random(8))
    book.set_targets([R2, R3], 0.0)
    before = drive(book, 5.0, {R2: 5.0, R3: 5.0})
    assert before[-1][2] == 5.0
    after = drive(book, 10.0, {R3: 5.0}, now=5.0)  # R2 black-holed from t = 5
    gone = [(t, v) for t, e, v in after if e == R2 and v is None]
    assert gone, "R2 never unusable"
    # unusable once half the window is losses: by timeout + window at the latest
    assert gone[0][0] <= 5.0 + p.timeout + p.window
    assert len(gone) == 1  # said once, not every interval
    assert all(v == 5.0 for _, e, v in after if e == R3)
    back = drive(book, 15.0, {R2: 5.0, R3: 5.0}, now=10.0)
    first = next((t, v) for t, e, v in back if e == R2)
    assert first[1] is not None and first[0] <= 10.0 + p.window


def test_never_answering_egress_is_unusable_after_min_probes() -> None:
    p = ProbeParams(rate=10, timeout=0.3, min_probes=3)
    book = ProbeBook(p, random.Random(9))
    book.set_targets([R2], 0.0)
    reports = drive(book, 3.0, {})
    assert reports and reports[0][2] is None and reports[0][0] <= 0.1 + 0.3 + 0.3


def test_late_duplicate_and_unknown_replies_are_ignored() -> None:
    book = ProbeBook(ProbeParams(rate=10, timeout=0.5), random.Random(10))
    book.set_targets([R2], 0.0)
    t = book.next_deadline() or 0.0
    ((egress, seq),) = book.due_sends(t)
    assert book.reply(egress, seq, 3.0, t + 0.003)
    assert not book.reply(egress, seq, 3.0, t + 0.004)  # duplicate
    assert not book.reply(egress, seq + 100, 3.0, t + 0.004)  # never sent
    assert not book.reply(R3, 1, 3.0, t)  # not a target
    t2 = book.next_deadline() or 0.0
    ((_, seq2),) = book.due_sends(t2)
    book.expire(t2 + 1.0)
    assert not book.reply(R2, seq2, 900.0, t2 + 1.0)  # after its timeout: already lost
    assert book.counters["ignored"] == 4 and book.counters["lost"] == 1


def test_removed_targets_are_forgotten() -> None:
    book = ProbeBook(ProbeParams(), random.Random(11))
    book.set_targets([R2, R3], 0.0)
    book.set_targets([R3], 1.0)
    assert book.targets() == [R3] and book.stats(R2, 1.0) is None


def test_token_bucket() -> None:
    b = TokenBucket(rate=10, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert b.ready_at(0.0) == pytest.approx(0.1)
    assert b.take(0.1) and not b.take(0.1)
    assert b.take(10.0) and b.take(10.0) and not b.take(10.0)  # burst caps what is saved
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(0, 1)
