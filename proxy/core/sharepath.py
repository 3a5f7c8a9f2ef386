"""The share path: a rig's submit, checked, answered, forwarded, and the pool's verdict
accounted.

A locally valid share is answered to the rig at once (it never waits on a slow pool, and
never sees a pool's trouble as its own rejects); if it meets the pool's target it is
forwarded first, one write sooner, and the pool's verdict is timed and counted against the
pool.  Every share owed to a pool ends as exactly one of accepted, rejected, timed out or
lost (see ``PoolCounters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..stratum import errors, messages
from ..stratum.errors import StratumError
from ..stratum.messages import Message
from .handover import retarget
from .rig_requests import SubmitRequest
from .shares import LOW64, check_share
from .stats import HASHES_PER_DIFF1
from .upstream import ConnState
from .vardiff import Vardiff, target_for

if TYPE_CHECKING:
    from ..config import ProxySection
    from .jobs import Job, JobBook
    from .pool import PoolState
    from .rig import RigSession
    from .upstream import Pending, PoolConnection

# lost[] reason of a share owed to a pool whose connection was gone before it could be written
LOST_UNSENT = "not sent: pool connection closed"


class ShareDesk:
    """Submits in, answers out; keeps the farm's share totals."""

    __slots__ = ("settings", "jobs", "totals", "vardiff")

    def __init__(self, settings: ProxySection, jobs: JobBook, totals: dict[str, int],
                 vardiff: Vardiff) -> None:
        self.settings = settings
        self.jobs = jobs
        self.totals = totals
        self.vardiff = vardiff

    def submit(self, rig: RigSession, msg: Message, now: float) -> None:
        """Check and answer one mining.submit; a bad share is answered with its error, and a
        bug costs one answer (a reject), never the process."""
        try:
            self._submit(rig, msg, now)
        except Exception as exc:
            if rig.request_failed(SubmitRequest(msg), exc):
                self.totals["rejected"] += 1

    def _submit(self, rig: RigSession, msg: Message, now: float) -> None:
        # one frame for the whole check: this runs for every share of the farm
        totals = self.totals
        totals["submits"] += 1
        try:
            if not rig.subscribed:
                raise StratumError(errors.NOT_SUBSCRIBED)
            sub = messages.parse_submit(msg.params)
            if sub.worker not in rig.workers:
                raise StratumError(errors.UNAUTHORIZED)
            job = self.jobs.get(sub.job_id)
            if job is None:
                raise StratumError(errors.JOB_NOT_FOUND)
            conn = job.conn
            if conn is not rig.conn and conn not in rig.recent_conns:  # rig.may_submit_to, inline
                raise StratumError(errors.JOB_NOT_FOUND)
            vardiff = self.vardiff
            # the rig's own difficulty, and the one before it while firmware catches up
            state = rig.vardiff
            rig_target = easiest = state.target
            if (rig_target is not None and state.previous_target is not None
                    and now - state.changed_at < vardiff.grace_s):
                easiest = max(rig_target, state.previous_target)
            verdict = check_share(job, rig, sub, self.settings.ntime_window_s,
                                  target_for(conn.difficulty), easiest)
            key = verdict.value & LOW64
            if key in job.seen:
                raise StratumError(errors.DUPLICATE)
        except StratumError as exc:
            rig.rejected[exc.code] += 1
            totals["rejected"] += 1
            rig.reply_error(msg.id, exc.code, exc.message)
            return
        job.seen.add(key)
        if verdict.forward:  # forward first: the pool gets it one write sooner
            self._forward(rig, job, msg, sub.version_bits is not None, now)
        elif verdict.outside_pool_mask:
            totals["outside_pool_mask"] += 1  # the rig never negotiated: cannot be sent
        else:
            totals["below_pool_target"] += 1
        rig.send(messages.true_response(msg.id))
        # credited at the difficulty the share met: the rig's, or its previous one in grace
        if rig_target is not None and verdict.value <= rig_target:
            credit = rig.difficulty or verdict.difficulty
        else:
            credit = rig.vardiff.previous or verdict.difficulty
        rig.accepted += 1
        rig.last_share_at = now
        rig.accepted_difficulty += credit
        rig.hashrate.add(credit * HASHES_PER_DIFF1, now)
        totals["accepted"] += 1
        conn.pool.split_work += credit
        new = vardiff.after_share(rig, (rig.conn or conn).difficulty, now)
        if new is not None:
            retarget(rig, new, vardiff, now)

    def _forward(self, rig: RigSession, job: Job, msg: Message, rolled: bool, now: float) -> None:
        conn = job.conn
        counters = conn.pool.counters
        # Counted as forwarded even when the connection is already gone: "forwarded" is every
        # share the proxy owed this pool, and each one ends as exactly one of accepted,
        # rejected[reason], timeouts or lost[reason] (or is still in flight).
        counters.forwarded += 1
        self.totals["forwarded"] += 1
        if conn.state is not ConnState.READY or conn.doomed:  # doomed: its pool failed
            counters.lost[LOST_UNSENT] += 1
            return
        params = msg.params
        assert params is not None
        pool_e2 = (job.padding_hex + rig.prefix.hex() + params[2] if job.rig_extranonce1 is None
                   else params[2])
        out = [self._upstream_user(conn, rig), job.upstream_job_id, pool_e2, params[3], params[4]]
        if rolled and conn.version_mask is not None:
            out.append(params[5])
        conn.submit(out, rig, job.difficulty, now)

    def _upstream_user(self, conn: PoolConnection, rig: RigSession) -> str:
        if not self.settings.forward_worker_names:
            return conn.pool.config.user
        return rig.upstream_worker or conn.pool.config.user

    @staticmethod
    def answered(pool: PoolState, pending: Pending, accepted: bool, reason: str, now: float) -> bool:
        """Account the pool's verdict; True when it was a reject (health may need a look)."""
        counters = pool.counters
        pool.latency.observe(now - pending.sent_at, now)
        pool.timeouts.record(False)
        if accepted:
            counters.accepted += 1
            counters.accepted_difficulty += pending.difficulty
            pool.rejects.record(False)
            return False
        counters.rejected[reason] += 1
        pool.rejects.record(True)
        return True

    @staticmethod
    def timed_out(conn: PoolConnection) -> int:
        """The pool went silent: its shares in flight are counted once, as timeouts (not
        again as lost when the connection goes)."""
        pool = conn.pool
        shares = conn.expire_shares()
        pool.counters.timeouts += shares
        for _ in range(min(shares, 100)):
            pool.timeouts.record(True)
        return shares
