"""RateSampler with a fake clock."""

from __future__ import annotations

import pytest

from leveret.management.rates import RateSampler
from leveret.model.snapshots import QueueSnapshot, Totals


def q(name: str, published: int, ready: int = 0) -> QueueSnapshot:
    return QueueSnapshot("/", name, True, False, False, {}, "classic", ready, 0, 0, 0, 0, None, None,
                         published=published, delivered=published, acked=published)  # fmt: skip


def test_no_samples_means_zero_rates() -> None:
    r = RateSampler()
    assert r.totals_rates()["publish"] == 0.0
    r.tick(0.0, 0.0, Totals(published=100), [])
    assert r.totals_rates()["publish"] == 0.0
    assert r.queue_rates("/", "missing") == {
        "publish": 0.0, "deliver_get": 0.0, "ack": 0.0, "redeliver": 0.0,
        "messages": 0.0, "messages_ready": 0.0, "messages_unacknowledged": 0.0,
    }  # fmt: skip


def test_rates_over_window() -> None:
    r = RateSampler(window=5.0, history=60.0)
    for i in range(11):  # 1 s ticks, 100 msg/s for 10 s
        r.tick(float(i), 1000.0 + i, Totals(published=100 * i, acked=50 * i), [q("a", 10 * i, ready=i)])
    rates = r.totals_rates()
    assert rates["publish"] == pytest.approx(100.0)
    assert rates["ack"] == pytest.approx(50.0)
    assert r.queue_rates("/", "a")["publish"] == pytest.approx(10.0)
    assert r.depth_rates()["messages_ready"] == pytest.approx(1.0)
    # The rate follows the recent window, not the whole history.
    for i in range(11, 17):
        r.tick(float(i), 1000.0 + i, Totals(published=1000, acked=500), [q("a", 100, ready=10)])
    assert r.totals_rates()["publish"] == 0.0


def test_a_queue_shows_the_rate_of_change_of_its_depth() -> None:
    """``messages_details.rate`` of a queue object (it was a constant 0.0): growing, then draining."""
    r = RateSampler(window=5.0, history=60.0)
    for i in range(11):  # 4 more ready messages every second
        r.tick(float(i), 1000.0 + i, Totals(), [q("a", 4 * i, ready=4 * i)])
    rates = r.queue_rates("/", "a")
    assert rates["messages_ready"] == pytest.approx(4.0)
    assert rates["messages"] == pytest.approx(4.0) and rates["messages_unacknowledged"] == 0.0
    for i in range(11, 22):  # then 2 fewer every second, nothing published
        r.tick(float(i), 1000.0 + i, Totals(), [q("a", 40, ready=40 - 2 * (i - 10))])
    assert r.queue_rates("/", "a")["messages_ready"] == pytest.approx(-2.0)


def test_history_bounded_and_nonmonotonic_ignored() -> None:
    r = RateSampler(window=2.0, history=10.0)
    for i in range(100):
        r.tick(float(i), float(i), Totals(published=i), [q("a", i)])
    assert len(r.samples()) <= 11
    assert [s.t for s in r.samples(3.0)] == [96.0, 97.0, 98.0, 99.0]
    r.tick(50.0, 50.0, Totals(published=0), [])
    assert r.samples()[-1].t == 99.0
    assert len(r._queues[("/", "a")]) <= 5


def test_queue_recreated_does_not_go_negative_and_deleted_is_forgotten() -> None:
    r = RateSampler(window=1.0)
    r.tick(0.0, 0.0, Totals(), [q("a", 100)])
    r.tick(1.0, 1.0, Totals(), [q("a", 5)])  # counter went backwards: new queue
    assert r.queue_rates("/", "a")["publish"] == 0.0
    r.tick(2.0, 2.0, Totals(), [])
    assert ("/", "a") not in r._queues


def test_bad_window() -> None:
    with pytest.raises(ValueError):
        RateSampler(window=10.0, history=5.0)


def test_queue_appearing_between_ticks_has_a_rate_at_once() -> None:
    # Declared and used between two ticks: its counters were zero at the previous tick.
    r = RateSampler(window=5.0)
    r.tick(0.0, 0.0, Totals(), [])
    r.tick(1.0, 1.0, Totals(published=40), [q("new", 40)])
    assert r.queue_rates("/", "new")["publish"] == pytest.approx(40.0)
    # A queue seen at the very first tick has no earlier tick to start from.
    r2 = RateSampler(window=5.0)
    r2.tick(0.0, 0.0, Totals(), [q("old", 40)])
    assert r2.queue_rates("/", "old")["publish"] == 0.0


def test_idle_queues_keep_no_history_and_rates_match_a_busy_window() -> None:
    """A queue's history holds its changes only (30,000 idle queues cost no allocation per tick),
    and its rate is still the window's: burst, then idle, then burst again."""
    r = RateSampler(window=5.0, history=60.0)
    published = 0
    for t in range(40):
        if 10 <= t < 13 or t >= 30:
            published += 20  # 20 msg/s during the bursts
        r.tick(float(t), float(t), Totals(), [q("idle", 7), q("bursty", published)])
        if t == 20:
            assert r.queue_rates("/", "bursty")["publish"] == 0.0
        if t == 12:  # three ticks into the burst, window of 5 s: 60 messages over 5 s
            assert r.queue_rates("/", "bursty")["publish"] == pytest.approx(60 / 5)
    assert len(r._queues[("/", "idle")]) == 1
    assert len(r._queues[("/", "bursty")]) <= 7
    assert r.queue_rates("/", "idle")["publish"] == 0.0
    assert r.queue_rates("/", "bursty")["publish"] == pytest.approx(20.0)
