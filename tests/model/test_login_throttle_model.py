"""LoginThrottle with a fake clock: the delays the socket tests measure, exactly."""

from __future__ import annotations

import pytest

from leveret.model.access import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempt(t: LoginThrottle, clock: Clock, peer: str = "a") -> float:
    """One wrong guess answered when the throttle says; returns how long it was held."""
    d = t.delay(peer)
    if d == 0:
        t.failed(peer)
    clock.now += d
    return d


def test_five_free_then_doubling_up_to_the_cap() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    assert [attempt(t, clock) for _ in range(14)] == pytest.approx(
        [0, 0, 0, 0, 0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]
    )
    assert t.delay("b") == 0  # another address


def test_held_attempts_are_answered_one_after_another() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for _ in range(5):
        attempt(t, clock)
    # five at once: each counted when held, each after the one before
    assert [t.delay("a") for _ in range(5)] == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1])
    clock.now += 3.1
    assert t.delay("a") == pytest.approx(3.2)


def test_a_success_or_the_window_forgets_the_address() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for _ in range(7):
        attempt(t, clock)
    t.succeeded("a")
    assert t.delay("a") == 0
    for _ in range(7):
        attempt(t, clock)
    clock.now += 301
    assert t.delay("a") == 0


def test_bounded_memory() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock, max_peers=3)
    for peer in "abcd":
        for _ in range(5):
            attempt(t, clock, peer)
    assert t.delay("a") == 0  # forgotten, the oldest
    assert t.delay("d") > 0
