"""Cheap hot-path statistics: bucketed latency histograms and decaying hashrate meters.

Recording a share must not allocate: histograms are fixed arrays of counters, windows are
a ring of such arrays, and hashrate is an exponentially decaying sum.
"""

from __future__ import annotations

import bisect
import math

# Bucket upper bounds in seconds: 50 us .. 60 s, roughly 4 per decade, plus +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025,
    0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class Histogram:
    """Cumulative-free bucket counts (last slot is +Inf) with sum and count."""

    __slots__ = ("counts", "sum", "count", "max")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self.max = 0.0

    def observe(self, value: float) -> None:
        """Count one value; no allocation, so it is safe on the share path."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.sum += value
        self.count += 1
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts into this one (to build a window from its slots)."""
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.sum += other.sum
        self.count += other.count
        self.max = max(self.max, other.max)

    def reset(self) -> None:
        """Zero the counts in place, so a ring slot is reused without allocating."""
        for i in range(len(self.counts)):
            self.counts[i] = 0
        self.sum = 0.0
        self.count = 0
        self.max = 0.0

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket that holds the q-th observation."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        lower = 0.0
        for i, c in enumerate(self.counts):
            upper = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else max(self.max, lower)
            if c and seen + c >= rank:
                frac = (rank - seen) / c
                return min(lower + (upper - lower) * frac, self.max)
            seen += c
            lower = upper
        return self.max


class WindowedHistogram:
    """Since-start histogram plus a sliding window made of ``slots`` sub-histograms."""

    __slots__ = ("total", "_ring", "_slot_len", "_slot_start", "_idx")

    def __init__(self, window_s: float = 60.0, slots: int = 6) -> None:
        self.total = Histogram()
        self._ring = [Histogram() for _ in range(slots)]
        self._slot_len = window_s / slots
        self._slot_start = 0.0
        self._idx = 0

    def _advance(self, now: float) -> None:
        steps = int((now - self._slot_start) // self._slot_len)
        if steps <= 0:
            return
        for _ in range(min(steps, len(self._ring))):
            self._idx = (self._idx + 1) % len(self._ring)
            self._ring[self._idx].reset()
        self._slot_start += steps * self._slot_len

    def observe(self, value: float, now: float) -> None:
        """Count a value in the current slot and in the since-start total."""
        if now - self._slot_start >= self._slot_len:
            self._advance(now)
        self._ring[self._idx].observe(value)
        self.total.observe(value)

    def window(self, now: float) -> Histogram:
        """A new histogram of the last ``window_s`` seconds (slots older than that are dropped first)."""
        self._advance(now)
        merged = Histogram()
        for h in self._ring:
            merged.merge(h)
        return merged


class RateMeter:
    """Exponentially decaying rate of a quantity (share difficulty -> hashrate).

    The average is corrected for the time the meter has existed (as Adam corrects its
    moments): without that, a rig connected for one minute reads at 18% of its hashrate
    (1 - e^(-60/300)), and a freshly restarted proxy shows the farm far below target."""

    __slots__ = ("tau", "_value", "_last", "_start")

    def __init__(self, tau: float = 300.0, start: float = 0.0) -> None:
        self.tau = tau
        self._value = 0.0
        self._last = 0.0
        self._start = start

    def add(self, amount: float, now: float) -> None:
        """Credit ``amount`` (a share's difficulty) at ``now``; older credit decays with ``tau``."""
        if self._last:
            self._value *= math.exp(-(now - self._last) / self.tau) if now > self._last else 1.0
        self._last = now
        self._value += amount / self.tau

    def rate(self, now: float) -> float:
        """The decayed rate per second at ``now``, corrected for the meter's age; 0.0 before any add."""
        if not self._last:
            return 0.0
        value = self._value * math.exp(-max(0.0, now - self._last) / self.tau)
        # never credit less than a second of history: one early share is not a huge rate
        elapsed = max(now - self._start, min(1.0, self.tau))
        return value / -math.expm1(-elapsed / self.tau)


HASHES_PER_DIFF1 = 2**32


class SlidingRatio:
    """Outcome ratio over the last ``size`` answers (for reject / timeout health limits)."""

    __slots__ = ("_ring", "_pos", "_filled", "_bad")

    def __init__(self, size: int = 100) -> None:
        self._ring = bytearray(size)
        self._pos = 0
        self._filled = 0
        self._bad = 0

    def record(self, bad: bool) -> None:
        """Record one answer; the oldest falls out once ``size`` are held."""
        old = self._ring[self._pos]
        if self._filled == len(self._ring):
            self._bad -= old
        else:
            self._filled += 1
        self._ring[self._pos] = 1 if bad else 0
        self._bad += 1 if bad else 0
        self._pos = (self._pos + 1) % len(self._ring)

    def clear(self) -> None:
        """Forget every answer, so a recovered pool is judged afresh."""
        self._ring[:] = bytes(len(self._ring))
        self._pos = self._filled = self._bad = 0

    @property
    def samples(self) -> int:
        """Answers held (at most ``size``): the health checks need enough before judging."""
        return self._filled

    @property
    def ratio(self) -> float:
        """Share of bad answers among those held; 0.0 with none."""
        return self._bad / self._filled if self._filled else 0.0
