"""Rigs that go quiet: their difficulty comes down, and a rig silent for several of its share
intervals is reported stalled.

With per-rig difficulty a working rig shares every ``rig_share_interval_s``, so silence is
evidence within seconds, not minutes: a dead rig is an event (one per pass, however many),
a figure in the status and /metrics, and hashrate the backfill controller can expect to
miss.  The rigs are visited a slice at a time so a pass over 50,000 never stalls the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import RigsResumed, RigsStalled
from .handover import retarget
from .rig_base import RigState

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .rig import RigSession

SLICE = 2000  # rigs visited per step
STEP_S = 0.25  # one step this often
STALL_INTERVALS = 6.0  # no share for this many intervals (and at least STALL_MIN_S): stalled
STALL_MIN_S = 60.0
WORKERS_NAMED = 10


class RigWatch:
    """Visits every rig once per pass (see the module docstring)."""

    __slots__ = ("core", "next_step_at", "stalled", "stalled_hashrate", "_pending", "_stalled_now",
                 "_resumed_now", "_count", "_hashrate")

    def __init__(self, core: ProxyCore, now: float) -> None:
        self.core = core
        self.next_step_at = now + STEP_S
        self.stalled = 0  # rigs stalled at the end of the last pass
        self.stalled_hashrate = 0.0  # what they delivered before (H/s)
        self._pending: list[RigSession] = []
        self._stalled_now: list[RigSession] = []
        self._resumed_now: list[RigSession] = []
        self._count = 0
        self._hashrate = 0.0

    @property
    def stall_after(self) -> float:
        """Seconds without a share after which an active rig counts as stalled."""
        return max(STALL_INTERVALS * self.core.settings.rig_share_interval_s, STALL_MIN_S)

    def step(self, now: float) -> None:
        """Visit the next slice of rigs, if it is time."""
        if now < self.next_step_at:
            return
        self.next_step_at = now + STEP_S
        if not self._pending:
            self._end_pass(now)
            self._pending = list(self.core.rigs.values())
        batch = self._pending[-SLICE:]
        del self._pending[-SLICE:]
        core = self.core
        vardiff = core.vardiff
        stall_after = self.stall_after
        for rig in batch:
            if rig.state is not RigState.ACTIVE:
                continue
            conn = rig.conn
            if conn is not None:
                new = vardiff.when_quiet(rig, conn.difficulty, now)
                if new is not None:
                    retarget(rig, new, vardiff, now)
            quiet = now - (rig.last_share_at or rig.connected_at) > stall_after
            if quiet:
                if not rig.stalled:
                    rig.stalled = True
                    self._stalled_now.append(rig)
                self._count += 1
                self._hashrate += rig.accepted_difficulty and rig.hashrate.rate(rig.last_share_at or now)
            elif rig.stalled:
                rig.stalled = False
                self._resumed_now.append(rig)

    def _end_pass(self, now: float) -> None:
        self.stalled, self.stalled_hashrate = self._count, self._hashrate
        self._count, self._hashrate = 0, 0.0
        core = self.core
        if self._stalled_now:
            rigs = self._stalled_now
            core.publish(RigsStalled(
                count=len(rigs), workers=[r.worker for r in rigs[:WORKERS_NAMED]],
                hashrate=sum(r.hashrate.rate(r.last_share_at or now) for r in rigs if r.accepted),
                reason=f"no share for {self.stall_after:g} s "
                       f"({STALL_INTERVALS:g} x rig_share_interval_s, at least {STALL_MIN_S:g} s)"), now)
        if self._resumed_now:
            rigs = self._resumed_now
            core.publish(RigsResumed(count=len(rigs), workers=[r.worker for r in rigs[:WORKERS_NAMED]]),
                         now)
        self._stalled_now, self._resumed_now = [], []
