"""Per-connection variable difficulty for the simulated pool, the way ckpool retargets.

Learned from ckpool's stratifier (``add_submit``, ``parse_submit``, ``suggest_diff`` in
``src/stratifier.c``; read at github.com/ctubio/ckpool and in public patch notes of
bitbucket.org/ckolivas/ckpool), re-expressed here rather than copied:

- the pool estimates each connection's *difficulty per second* from the shares it credits,
  with an exponentially decaying window (ckpool: 5 minutes) and a correction for a short
  history (a new connection is not judged as if it had been silent before it connected);
- it looks again only after enough shares (ckpool: 72) or enough time (ckpool: 240 s)
  since the last change, so one lucky burst does not move the difficulty;
- it aims at one share per target interval (ckpool: ~3.33 s) with hysteresis: nothing
  changes while the connection sends between 1/2 and 4/3 of that rate;
- the new difficulty is clamped to the pool's bounds and never below the client's floor
  (``mining.suggest_difficulty``, or ``minimum-difficulty`` from ``mining.configure``);
- a connection coming back from a quiet spell is not lowered on its first share: the clock
  restarts instead (ckpool's "leave of absence" rule);
- ``mining.set_difficulty`` goes out at once, and applies to jobs sent after it; shares for
  jobs sent before it are credited at the lower of the two difficulties (ckpool 3a6da1f:
  "very few clients" apply a difficulty only from the next notify).  ``SimPool`` keeps
  that last rule, per job; this module decides *when* and *to what*.

Pure: no sockets, no clock of its own (time is passed in), so tests drive it directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Vardiff", "VardiffConfig"]

# ckpool's ratios, in units of the target interval: retarget after 72 shares or 240 s, and
# estimate over a 300 s window, at one share per 3.33 s
RETARGET_INTERVALS = 72
WINDOW_INTERVALS = 90
LOW_RATIO = 0.5  # below half the target share rate: lower the difficulty
HIGH_RATIO = 4 / 3  # above 4/3 of it: raise


@dataclass(frozen=True)
class VardiffConfig:
    """Bounds and pace of a pool's vardiff; times in seconds."""

    target_interval_s: float = 10 / 3
    minimum: float = 2.0 ** -30
    maximum: float = 2.0 ** -16  # a Python rig needs ~65k hashes per share up here
    retarget_shares: int = RETARGET_INTERVALS
    retarget_s: float | None = None  # None: RETARGET_INTERVALS target intervals
    window_s: float | None = None  # None: WINDOW_INTERVALS target intervals

    def __post_init__(self) -> None:
        if not self.target_interval_s > 0:
            raise ValueError("vardiff target interval must be > 0")
        if not 0 < self.minimum <= self.maximum:
            raise ValueError("vardiff needs 0 < minimum <= maximum")
        if self.retarget_shares < 1:
            raise ValueError("vardiff retarget_shares must be >= 1")

    @property
    def retarget_period(self) -> float:
        return self.retarget_s if self.retarget_s is not None \
            else RETARGET_INTERVALS * self.target_interval_s

    @property
    def window(self) -> float:
        return self.window_s if self.window_s is not None \
            else WINDOW_INTERVALS * self.target_interval_s

    def clamp(self, difficulty: float, floor: float = 0.0) -> float:
        return min(self.maximum, max(self.minimum, floor, difficulty))


class Vardiff:
    """One connection's difficulty: fed every credited share, says when to change it."""

    def __init__(self, config: VardiffConfig, difficulty: float, now: float) -> None:
        self.config = config
        self.floor = 0.0
        self.difficulty = config.clamp(difficulty)
        self._start = now  # when the connection got work: the estimate's history begins
        self._last = now
        self._sum = 0.0  # credited difficulty, decayed with the window
        self._changed_at = now
        self._since_change = 0

    def rate(self, now: float) -> float:
        """Estimated credited difficulty per second."""
        window = self.config.window
        decayed = self._sum * math.exp(-(now - self._last) / window)
        seen = 1.0 - math.exp(-max(now - self._start, 1e-3) / window)
        return decayed / (window * seen)

    def on_share(self, credited: float, now: float) -> float | None:
        """Account an accepted share; the new difficulty when it is time to retarget."""
        cfg = self.config
        self._sum = self._sum * math.exp(-(now - self._last) / cfg.window) + credited
        self._last = now
        self._since_change += 1
        if self._since_change < cfg.retarget_shares \
                and now - self._changed_at < cfg.retarget_period:
            return None
        if credited != self.difficulty:
            return None  # still work at the previous difficulty: judge the new one later
        rate = self.rate(now)
        ratio = rate * cfg.target_interval_s / self.difficulty
        if LOW_RATIO < ratio < HIGH_RATIO:
            return None
        optimal = cfg.clamp(rate * cfg.target_interval_s, self.floor)
        if optimal == self.difficulty:
            return None
        if optimal < self.difficulty and self._since_change == 1:
            self._changed_at = now  # back from a quiet spell: give it a full period first
            return None
        return self._change(optimal, now)

    def set_floor(self, floor: float, now: float, exact: bool = False) -> float | None:
        """A client's floor: ``mining.suggest_difficulty`` (``exact``: go there at once, as
        ckpool does) or ``minimum-difficulty`` (only never below it).  Returns the new
        difficulty when it changes now."""
        self.floor = self.config.clamp(floor)
        wanted = self.floor if exact else max(self.difficulty, self.floor)
        return None if wanted == self.difficulty else self._change(wanted, now)

    def force(self, difficulty: float, now: float) -> None:
        """The pool operator's override (``SimPool.set_difficulty``): no bounds, no floor."""
        self.difficulty = difficulty
        self._changed_at = now
        self._since_change = 0

    def _change(self, difficulty: float, now: float) -> float:
        self.difficulty = difficulty
        self._changed_at = now
        self._since_change = 0
        return difficulty
