"""Message rates from cumulative counters, sampled over time.

The model only keeps cumulative counters (:class:`~leveret.model.snapshots.Totals`
and the per-queue ``published``/``delivered``/``acked``/``redelivered``). A
:class:`RateSampler` is ticked about once a second (the HTTP app does it); it keeps a
bounded history of samples and turns deltas into per-second rates, the way
RabbitMQ's management database turns its counters into ``*_details.rate``.

Contract:

* :meth:`RateSampler.tick` takes ``now`` (monotonic seconds) explicitly, so tests
  drive it with a fake clock. Calling it with a ``now`` not greater than the last
  sample's is ignored.
* Rates are computed over the most recent ``window`` seconds of history (RabbitMQ's
  default sample interval is 5 s). With fewer than two samples every rate is 0.0.
* Counters that go backwards (a queue deleted and re-declared under the same
  name) restart that queue's history instead of producing negative rates.
* A queue that appears between two ticks starts from zero counters at the previous
  tick, so a queue declared and used straight away has a rate after one tick.
* History is bounded to ``history`` seconds; nothing grows without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from leveret.model.snapshots import Totals

#: Fields of :class:`Totals` turned into rates, with the RabbitMQ ``message_stats`` key for each.
TOTALS_STATS: tuple[tuple[str, str], ...] = (
    ("published", "publish"),
    ("delivered", "deliver_get"),
    ("acked", "ack"),
    ("redelivered", "redeliver"),
    ("confirmed", "confirm"),
    ("returned", "return_unroutable"),
)

#: Per-queue counter fields of :class:`QueueSnapshot`, with their ``message_stats`` key.
QUEUE_STATS: tuple[tuple[str, str], ...] = (
    ("published", "publish"),
    ("delivered", "deliver_get"),
    ("acked", "ack"),
    ("redelivered", "redeliver"),
)

#: Per-queue depths whose rate of change the queue objects show (``messages_details.rate``, ...):
#: kept in a queue's history after the QUEUE_STATS counters.
QUEUE_DEPTHS: tuple[str, ...] = ("messages", "messages_ready", "messages_unacknowledged")

QueueKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick: cumulative counters plus queue depth totals at time ``t``."""

    t: float
    wall: float  # unix seconds, for RabbitMQ's ``samples[].timestamp`` (ms)
    counters: tuple[int, ...]
    messages: int
    messages_ready: int
    messages_unacknowledged: int


def _rate(first: tuple[float, tuple[int, ...]], last: tuple[float, tuple[int, ...]], i: int) -> float:
    dt = last[0] - first[0]
    if dt <= 0:
        return 0.0
    return max(0.0, (last[1][i] - first[1][i]) / dt)


class RateSampler:
    """Keeps a bounded history of counters and answers "how fast, lately?"."""

    def __init__(self, window: float = 5.0, history: float = 600.0) -> None:
        if window <= 0 or history < window:
            raise ValueError("need 0 < window <= history")
        self.window = window
        self.history = history
        self._samples: deque[Sample] = deque()
        # Per queue, (tick time, counters) at each tick where they changed (the step function);
        # an idle queue costs a comparison per tick, not a new entry.
        self._queues: dict[QueueKey, deque[tuple[float, tuple[int, ...]]]] = {}
        self._ref: tuple[float, float] | None = None

    # ---- feeding -----------------------------------------------------------------
    def tick(self, now: float, wall: float, totals: Totals, queues: Iterable[QueueLike]) -> None:
        """Record one sample of ``totals`` and every queue's counters at monotonic ``now``."""
        t = self.begin_tick(now, wall, totals)
        if t is not None:
            t.feed(queues)
            t.finish()

    def begin_tick(self, now: float, wall: float, totals: Totals) -> Tick | None:
        """A tick fed in parts (:meth:`Tick.feed` per slice of queues, then :meth:`Tick.finish`),
        so a caller with 100,000 queues can yield to its event loop between slices. None when
        ``now`` is not after the last sample."""
        if self._samples and now <= self._samples[-1].t:
            return None
        return Tick(self, now, wall, tuple(int(getattr(totals, f)) for f, _ in TOTALS_STATS))

    # ---- reading -----------------------------------------------------------------
    def _window_pair(
        self, hist: Iterable[tuple[float, tuple[int, ...]]]
    ) -> tuple[tuple[float, tuple[int, ...]], tuple[float, tuple[int, ...]]] | None:
        items = list(hist)
        if len(items) < 2:
            return None
        last = items[-1]
        first = items[-2]
        for item in reversed(items[:-1]):
            first = item
            if last[0] - item[0] >= self.window:
                break
        return first, last

    def totals_rates(self) -> dict[str, float]:
        """``{"publish": r, "deliver_get": r, ...}`` in messages per second."""
        pair = self._window_pair((s.t, s.counters) for s in self._samples)
        return {key: (_rate(*pair, i) if pair else 0.0) for i, (_, key) in enumerate(TOTALS_STATS)}

    def _reference(self) -> tuple[float, float] | None:
        """(last tick, the newest tick at least ``window`` before it, or the oldest)."""
        if len(self._samples) < 2:
            return None
        last = self._samples[-1].t
        if self._ref is None or self._ref[0] != last:
            first = self._samples[-2].t
            for i in range(len(self._samples) - 2, -1, -1):
                first = self._samples[i].t
                if last - first >= self.window:
                    break
            self._ref = (last, first)
        return self._ref

    def queue_rates(self, vhost: str, name: str) -> dict[str, float]:
        """Per-queue rates keyed like :data:`QUEUE_STATS`, plus the rates of change of its depths
        keyed like :data:`QUEUE_DEPTHS` (negative while it drains); zeros for an unknown queue."""
        hist = self._queues.get((vhost, name))
        ref = self._reference()
        if not hist or ref is None:
            return {key: 0.0 for key in (*(k for _, k in QUEUE_STATS), *QUEUE_DEPTHS)}
        now, t_first = ref
        # A queue's history holds only its changes: its counters at time t are those of the
        # last entry at or before t (or its first entry, when it appeared after t).
        first, start = hist[0], hist[0][0]
        for entry in reversed(hist):
            if entry[0] <= t_first:
                first, start = entry, t_first
                break
        dt = now - start
        last = hist[-1][1]
        out = {
            key: (max(0.0, (last[i] - first[1][i]) / dt) if dt > 0 else 0.0) for i, (_, key) in enumerate(QUEUE_STATS)
        }
        n = len(QUEUE_STATS)
        ready, unacked = ((last[n] - first[1][n]) / dt, (last[n + 1] - first[1][n + 1]) / dt) if dt > 0 else (0.0, 0.0)
        out.update(messages=ready + unacked, messages_ready=ready, messages_unacknowledged=unacked)
        return out

    def depth_rates(self) -> dict[str, float]:
        """Rate of change of queue depth totals (messages, messages_ready, messages_unacknowledged)."""
        items = list(self._samples)
        out = {"messages": 0.0, "messages_ready": 0.0, "messages_unacknowledged": 0.0}
        if len(items) < 2:
            return out
        last = items[-1]
        first = items[-2]
        for s in reversed(items[:-1]):
            first = s
            if last.t - s.t >= self.window:
                break
        dt = last.t - first.t
        if dt > 0:
            for k in out:
                out[k] = (getattr(last, k) - getattr(first, k)) / dt
        return out

    def samples(self, age: float | None = None) -> list[Sample]:
        """Samples from the last ``age`` seconds (all kept history when None), oldest first."""
        if age is None or not self._samples:
            return list(self._samples)
        horizon = self._samples[-1].t - age
        return [s for s in self._samples if s.t >= horizon]


class QueueLike(Protocol):
    """What a tick reads from a queue (a QueueSnapshot or a backend's QueueCounters)."""

    @property
    def vhost(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def messages_ready(self) -> int: ...
    @property
    def messages_unacknowledged(self) -> int: ...
    @property
    def published(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    @property
    def acked(self) -> int: ...
    @property
    def redelivered(self) -> int: ...


class Tick:
    """One sample being recorded; see :meth:`RateSampler.begin_tick`."""

    def __init__(self, sampler: RateSampler, now: float, wall: float, counters: tuple[int, ...]) -> None:
        self.s = sampler
        self.now = now
        self.wall = wall
        self.counters = counters
        # A queue first seen now did not exist at the previous tick: its counters were zero
        # then, so what it did since counts toward its rate at once.
        self.prev_t = sampler._samples[-1].t if sampler._samples else None
        self.ready = self.unacked = 0
        self.seen: set[QueueKey] = set()

    def feed(self, queues: Iterable[QueueLike]) -> None:
        queues_hist = self.s._queues
        now, prev_t, seen = self.now, self.prev_t, self.seen
        # Per-queue history only needs the rate window, not the whole chart history.
        qhorizon = now - self.s.window - 1.0
        for q in queues:
            self.ready += q.messages_ready
            self.unacked += q.messages_unacknowledged
            key = (q.vhost, q.name)
            seen.add(key)
            # The counters, then the depths (which may go down).
            counters = (q.published, q.delivered, q.acked, q.redelivered, q.messages_ready, q.messages_unacknowledged)
            hist = queues_hist.get(key)
            if hist is None:
                hist = queues_hist[key] = deque()
                if prev_t is not None:
                    hist.append((prev_t, (0, 0, 0, 0, 0, 0)))
            elif not hist or counters == hist[-1][1]:
                continue
            elif any(c < p for c, p in zip(counters[:4], hist[-1][1][:4], strict=True)):
                hist = queues_hist[key] = deque()
            hist.append((now, counters))
            # Keep the newest entry at or before the horizon: it gives the counters there.
            while len(hist) > 1 and hist[1][0] <= qhorizon:
                hist.popleft()

    def finish(self) -> None:
        s = self.s
        if s._samples and self.now <= s._samples[-1].t:
            return
        s._samples.append(Sample(t=self.now, wall=self.wall, counters=self.counters,
                                 messages=self.ready + self.unacked, messages_ready=self.ready,
                                 messages_unacknowledged=self.unacked))  # fmt: skip
        horizon = self.now - s.history
        while s._samples and s._samples[0].t < horizon:
            s._samples.popleft()
        for key in [k for k in s._queues if k not in self.seen]:
            del s._queues[key]
