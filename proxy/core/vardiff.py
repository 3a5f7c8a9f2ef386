"""Per-rig difficulty: each rig aims at one share every ``rig_share_interval_s``.

A pool's vardiff sets one difficulty per upstream connection, for the whole connection's
hashrate (up to 65,536 rigs).  Passed to every rig, it would make each one submit thousands
of times less often than it should: its hashrate would be noise and a dead rig would be
noticed minutes late.  So the proxy gives each rig its own difficulty:

- never above the pool connection's (the pool credits shares at its own difficulty: a rig
  above it would lose paid work); shares meeting the rig's target are answered and counted
  for the rig, those meeting the pool's target are also forwarded, exactly once;
- a power of two, rounded down, and never fractional when the pool's is >= 1 (fractional
  difficulties break some firmware); floored by the rig's own ``mining.suggest_difficulty``
  or ``mining.configure`` minimum-difficulty and by ``rig_min_difficulty``, capped by
  ``rig_max_difficulty``;
- retargeted at most every ``rig_share_interval_s``, only when the share rate is off by more
  than 2x (hysteresis), with ``mining.set_difficulty`` followed by a notify; shares at the
  previous difficulty are accepted for a grace period (firmware applies a new difficulty
  from the next job);
- a new rig starts at what it suggested, else at the median of the rigs already settled
  (farms are mostly alike), else at the pool's; a rig with no share for 3 intervals is
  lowered 4x at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from ..stratum import messages, work

if TYPE_CHECKING:
    from ..config import ProxySection
    from .rig import RigSession

RAISE_AT = 2.0  # shares per interval above which the difficulty goes up
LOWER_AT = 0.5  # ... below which it goes down
QUIET_INTERVALS = 3.0  # no share for this many intervals: lower without evidence
QUIET_STEP = 4.0  # the most a difficulty comes down in one step
WINDOW_INTERVALS = 8.0  # a rate is judged over this many intervals (Poisson noise: ~35%)...
FAST_RETARGET_SHARES = 16  # ... or this many shares, whichever comes first
GRACE_INTERVALS = 2.0  # shares at the previous difficulty count this long after a change
SETTLED_SHARES = 8  # a rig with this many shares at its difficulty informs new rigs' start
MAX_SPLIT = 2.0**24  # a rig's difficulty stays above the pool connection's / this (a floor
# for rigs that never share: lowering them forever would underflow)

_lines: dict[float, bytes] = {}
_targets: dict[float, int] = {}


def pow2_floor(value: float) -> float:
    """The largest power of two not above ``value`` (rig difficulties are powers of two)."""
    return 2.0 ** math.floor(math.log2(value))


def set_difficulty_line(difficulty: float) -> bytes:
    """``mining.set_difficulty`` for a difficulty, encoded once (they are powers of two)."""
    line = _lines.get(difficulty)
    if line is None:
        if len(_lines) > 256:
            _lines.clear()
        line = _lines[difficulty] = messages.notification("mining.set_difficulty", [difficulty])
    return line


def target_for(difficulty: float) -> int:
    """The 256-bit target of a difficulty, computed once per value."""
    target = _targets.get(difficulty)
    if target is None:
        if len(_targets) > 256:
            _targets.clear()
        target = _targets[difficulty] = work.difficulty_to_target(difficulty)
    return target


class RigDifficulty:
    """One rig's difficulty state (held by its session)."""

    __slots__ = ("previous", "changed_at", "since", "shares", "minimum", "settled", "judged",
                 "target", "previous_target")

    def __init__(self, now: float) -> None:
        self.previous: float | None = None  # before the last change, accepted for a grace
        # the targets of the rig's difficulty and of the previous one, kept with them: the
        # share check reads them for every share
        self.target: int | None = None
        self.previous_target: int | None = None
        self.changed_at = now
        self.since = now  # start of the current measuring window
        self.shares = 0  # shares at the current difficulty in that window
        self.minimum = 0.0  # the rig's own floor (suggest_difficulty, minimum-difficulty)
        self.settled = False
        self.judged = 0  # windows closed: the first is one interval long (a new rig converges
        # fast), the others WINDOW_INTERVALS (a settled rig is not moved by Poisson noise)


class Vardiff:
    """Decides every rig's difficulty for one core."""

    __slots__ = ("settings", "interval", "grace_s", "_in_use")

    def __init__(self, settings: ProxySection) -> None:
        self.settings = settings
        self.interval = settings.rig_share_interval_s
        self.grace_s = GRACE_INTERVALS * self.interval  # shares at the previous difficulty count
        self._in_use: Counter[float] = Counter()  # difficulty -> settled rigs on it

    def clamp(self, wanted: float, rig: RigSession, pool_difficulty: float) -> float:
        """A difficulty the rig may have under this pool: see the module docstring."""
        s = self.settings
        floor = max(s.rig_min_difficulty, rig.vardiff.minimum)
        value = max(wanted, floor)
        if s.rig_max_difficulty:
            value = min(value, s.rig_max_difficulty)
        value = pow2_floor(max(min(value, pool_difficulty), pool_difficulty / MAX_SPLIT))
        if pool_difficulty >= 1.0:
            value = max(value, 1.0)
        return min(value, pool_difficulty)

    def start(self, rig: RigSession, pool_difficulty: float, rigs_on_connection: int = 1) -> float:
        """The first difficulty of a rig that has none yet: what it suggested, else the median
        of the rigs already settled, else its share of the pool connection's (once the pool's
        vardiff has aimed the connection at its whole hashrate, a rig among N carries about
        1/N: the caller passes N, or 1 while the pool has not retargeted)."""
        wanted = (rig.suggested_difficulty or self._farm_median()
                  or pool_difficulty / max(1, rigs_on_connection))
        return self.clamp(wanted, rig, pool_difficulty)

    def _farm_median(self) -> float | None:
        total = sum(self._in_use.values())
        if total < 3:
            return None
        seen = 0
        for difficulty in sorted(self._in_use):
            seen += self._in_use[difficulty]
            if seen * 2 >= total:
                return difficulty
        return None

    def after_share(self, rig: RigSession, pool_difficulty: float, now: float) -> float | None:
        """Count an accepted share; the new difficulty when a retarget is due, else None."""
        state = rig.vardiff
        state.shares += 1
        if state.shares >= SETTLED_SHARES and not state.settled and rig.difficulty is not None:
            state.settled = True
            self._in_use[rig.difficulty] += 1
        elapsed = now - state.since
        window = WINDOW_INTERVALS * self.interval if state.judged else self.interval
        if elapsed < window and state.shares < FAST_RETARGET_SHARES:
            return None
        return self._judge(rig, pool_difficulty, now)

    def when_quiet(self, rig: RigSession, pool_difficulty: float, now: float) -> float | None:
        """Checked from time to time, share or not: a rig that is silent for QUIET_INTERVALS
        is lowered without waiting for evidence that may never come, and one whose window
        has closed with too few shares (its next share may be minutes away) is judged now."""
        state = rig.vardiff
        if rig.difficulty is None or rig.stalled:  # a stalled rig is dead, not slow: leave it
            return None
        elapsed = now - state.since
        if state.shares == 0 and elapsed >= QUIET_INTERVALS * self.interval:
            state.since = now
            return self._changed(rig, rig.difficulty / QUIET_STEP, pool_difficulty)
        if elapsed >= WINDOW_INTERVALS * self.interval:
            return self._judge(rig, pool_difficulty, now)
        return None

    def _judge(self, rig: RigSession, pool_difficulty: float, now: float) -> float | None:
        """Close the rig's window: a new difficulty when its share rate is off by more than
        2x (the hysteresis), else None.  It comes down at most QUIET_STEP at a time."""
        state = rig.vardiff
        elapsed = now - state.since
        if elapsed <= 0 or rig.difficulty is None:
            return None
        per_interval = state.shares / elapsed * self.interval
        state.since, state.shares = now, 0
        state.judged += 1
        if LOWER_AT <= per_interval <= RAISE_AT:
            return None
        wanted = rig.difficulty * max(per_interval, 1 / QUIET_STEP)
        return self._changed(rig, wanted, pool_difficulty)

    def capped(self, rig: RigSession, pool_difficulty: float) -> float | None:
        """The pool's difficulty fell below the rig's: the rig must come down with it."""
        if rig.difficulty is None or rig.difficulty <= pool_difficulty:
            return None
        return self._changed(rig, rig.difficulty, pool_difficulty)

    def _changed(self, rig: RigSession, wanted: float, pool_difficulty: float) -> float | None:
        new = self.clamp(wanted, rig, pool_difficulty)
        return None if new == rig.difficulty else new

    def apply(self, rig: RigSession, difficulty: float, now: float) -> None:
        """Record the rig's new difficulty (the caller sends set_difficulty and a job)."""
        state = rig.vardiff
        if state.settled and rig.difficulty is not None:
            self._in_use[rig.difficulty] -= 1
            if self._in_use[rig.difficulty] <= 0:
                del self._in_use[rig.difficulty]
            state.settled = False
        state.previous = rig.difficulty
        state.previous_target = state.target
        state.target = target_for(difficulty)
        state.changed_at = state.since = now
        state.shares = 0
        rig.difficulty = difficulty

    def forget(self, rig: RigSession) -> None:
        """The rig is gone: it no longer informs new rigs' start."""
        if rig.vardiff.settled and rig.difficulty is not None:
            self._in_use[rig.difficulty] -= 1
            if self._in_use[rig.difficulty] <= 0:
                del self._in_use[rig.difficulty]
            rig.vardiff.settled = False
