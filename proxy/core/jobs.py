"""Job translation: the coinb1 fold that makes pool switches invisible.

For each upstream job the proxy rewrites ``coinb1' = coinb1 + pool_extranonce1 + padding``;
a rig then builds ``coinb1' + prefix + extranonce2 + coinb2``, the very coinbase the pool
expects for ``pool_extranonce2 = padding + prefix + extranonce2``.  The rewritten notify is
the same bytes for every rig on that upstream connection, so it is encoded once.
``JobBook`` finds a rig's job by the id the rig submits, for as long as it may be submitted.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from typing import TYPE_CHECKING

from ..stratum import messages, work
from ..stratum.messages import Notify

if TYPE_CHECKING:
    from .layout import Layout
    from .upstream import PoolConnection

_sha256 = hashlib.sha256
_pack_u32 = struct.Struct("<I").pack
_pack_tail = struct.Struct("<III").pack  # ntime, nbits, nonce: the header's last 12 bytes

JOBS_KEPT = 8  # per connection: a rig may still submit to the last few jobs
DEAD_JOB_GRACE_S = 30.0  # a closed connection's jobs stay known this long (shares: lost, not stale)


class Job:
    """One upstream job as rigs see it, shared by every rig on its upstream connection."""

    __slots__ = (
        "job_id", "upstream_job_id", "conn", "notify", "coinb1_down", "coinb1_state",
        "coinb2", "branch", "prevhash_header", "version", "nbits", "ntime", "padding", "padding_hex",
        "difficulty", "target", "rig_extranonce1", "extranonce2_size", "version_mask", "line",
        "_line_clean", "_line_keepalive", "stale", "seen", "created",
    )

    def __init__(self, job_id: str, conn: PoolConnection, notify: Notify, padding: bytes,
                 difficulty: float, now: float, rig_extranonce1: bytes | None = None,
                 extranonce2_size: int = 0) -> None:
        self.job_id = job_id
        self.upstream_job_id = notify.job_id
        self.conn = conn
        self.notify = notify
        self.padding = padding
        self.padding_hex = padding.hex()  # the head of every forwarded share's extranonce2
        # None: the fold (rigs use their own prefix); bytes: pass-through on a pool too narrow
        # for the fold, where the one rig on the connection uses the pool's extranonce1 itself
        self.rig_extranonce1 = rig_extranonce1
        self.extranonce2_size = extranonce2_size
        self.coinb1_down = (notify.coinb1 + conn.extranonce1 + padding if rig_extranonce1 is None
                            else notify.coinb1)
        # sha256 midstate of coinb1': each share only hashes its own tail.
        self.coinb1_state = hashlib.sha256(self.coinb1_down)
        self.coinb2 = notify.coinb2
        self.branch = notify.merkle_branch
        self.prevhash_header = work.prevhash_to_header(notify.prevhash)
        self.version = notify.version
        self.nbits = notify.nbits
        self.ntime = notify.ntime
        self.difficulty = difficulty
        self.target = work.difficulty_to_target(difficulty)
        # the pool's version-rolling mask when the job was sent: a share is checked against
        # the mask its rig had for this job, not the one a later switch gave it
        self.version_mask = conn.version_mask
        self.line = self._encode(notify.clean_jobs)
        self._line_clean = self.line if notify.clean_jobs else b""
        self._line_keepalive = b"" if notify.clean_jobs else self.line
        self.stale = False
        self.seen: set[int] = set()
        self.created = now

    def _encode(self, clean: bool) -> bytes:
        params = messages.notify_params(self.notify, job_id=self.job_id, coinb1=self.coinb1_down,
                                        clean_jobs=clean)
        return messages.notification("mining.notify", params)

    @property
    def line_clean(self) -> bytes:
        """The notify with clean_jobs=true, sent to rigs that just moved onto this job."""
        if not self._line_clean:
            self._line_clean = self._encode(True)
        return self._line_clean

    @property
    def line_keepalive(self) -> bytes:
        """The same job with clean_jobs=false: proof of life that does not restart work."""
        if not self._line_keepalive:
            self._line_keepalive = self._encode(False)
        return self._line_keepalive

    def header_hash(self, prefix: bytes, extranonce2: bytes, ntime: int, nonce: int,
                    version: int) -> bytes:
        """The block header hash of a share, from the coinb1' midstate: the share check's one hash
        (``work.build_header``'s layout, packed in two calls: this runs for every share)."""
        sha256 = _sha256
        h = self.coinb1_state.copy()
        h.update(prefix + extranonce2 + self.coinb2)
        root = sha256(h.digest()).digest()
        for branch_hash in self.branch:
            root = sha256(sha256(root + branch_hash).digest()).digest()
        header = _pack_u32(version) + self.prevhash_header + root + _pack_tail(ntime, self.nbits, nonce)
        return sha256(sha256(header).digest()).digest()


class JobBook:
    """Every job a rig may still submit to, by the proxy job id it was sent with."""

    __slots__ = ("layout", "arrivals", "_by_id", "_next", "_expiring")

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._by_id: dict[str, Job] = {}
        self.arrivals: deque[tuple[float, PoolConnection]] = deque()  # for the stale-job timer
        self._next = 1
        self._expiring: deque[tuple[float, list[str]]] = deque()

    def get(self, job_id: str) -> Job | None:
        """The job a rig submitted to; None if never issued or no longer kept (pushed out by
        newer jobs, or its closed connection's grace is over)."""
        return self._by_id.get(job_id)

    def __getitem__(self, job_id: str) -> Job:
        return self._by_id[job_id]

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._by_id

    def add(self, conn: PoolConnection, notify: Notify, now: float) -> Job:
        """Translate a pool's notify for the rigs on ``conn`` and make it the current job."""
        job_id = f"{self._next:x}"
        self._next += 1
        layout = self.layout
        if not layout.decided:  # no rig sees these: jobs are translated again once it is
            job = Job(job_id, conn, notify, b"", conn.difficulty, now,
                      extranonce2_size=conn.extranonce2_size)
        elif conn.passthrough:
            job = Job(job_id, conn, notify, b"", conn.difficulty, now,
                      rig_extranonce1=conn.extranonce1, extranonce2_size=conn.extranonce2_size)
        else:
            e2_size = layout.e2_size or 0
            room = conn.extranonce2_size - e2_size - (layout.prefix_size or 0)
            job = Job(job_id, conn, notify, bytes(room), conn.difficulty, now,
                      extranonce2_size=e2_size)
        if notify.clean_jobs:
            for old in conn.jobs.values():
                old.stale = True
        conn.jobs[notify.job_id + "#" + job_id] = job
        self._by_id[job_id] = job
        while len(conn.jobs) > JOBS_KEPT:
            old = conn.jobs.pop(next(iter(conn.jobs)))
            self._by_id.pop(old.job_id, None)
        conn.current_job = job
        if conn.last_job_at:
            conn.pool.job_intervals.append(now - conn.last_job_at)
        conn.last_job_at = now
        self.arrivals.append((now, conn))
        conn.pool.last_job_at = now
        return job

    def retire(self, conn: PoolConnection, now: float) -> None:
        """A closed connection's jobs: shares for them are still answered (and counted lost
        with the reason) for a grace period, never rejected as stale."""
        self._expiring.append((now + DEAD_JOB_GRACE_S, [j.job_id for j in conn.jobs.values()]))

    def expire(self, now: float) -> None:
        """Forget closed connections' jobs whose grace period is over; the timers call it."""
        while self._expiring and self._expiring[0][0] <= now:
            for job_id in self._expiring.popleft()[1]:
                self._by_id.pop(job_id, None)

    def next_expiry(self) -> float | None:
        """When the next retired jobs are forgotten, so the timers can wake then; None if none."""
        return self._expiring[0][0] if self._expiring else None
