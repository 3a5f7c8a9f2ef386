"""EthereumStratum jobs and the pure share check (no proof of work: see ``stratum.ethstratum``).

Every pool job gets a proxy job id, unique across pools, so a rig moved from one pool to
another can never submit for a job id the new pool also used; the job remembers its
connection, so a share always goes to the pool (and under the extranonce) it was mined for.
The notify line is encoded once per job and written to every rig on the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..stratum import errors, ethproxy, ethstratum
from ..stratum.ethstratum import EthNotify

if TYPE_CHECKING:
    from .eth_rig import EthRigSession
    from .eth_upstream import EthPoolConnection

JOBS_KEPT = 2048  # jobs remembered per listener (old ones answer "job not found")


@dataclass(slots=True, eq=False)
class EthJob:
    """One pool job as the rigs see it."""

    proxy_id: str
    notify: EthNotify
    conn: EthPoolConnection
    difficulty: float
    stale: bool = False  # superseded by a clean job on its connection
    seen: set[bytes] = field(default_factory=set)  # pool-side nonces already forwarded
    _lines: dict[bool | None, bytes] = field(default_factory=dict)

    def push_line(self) -> bytes:
        """The work as the getwork dialect pushes it, encoded once for all rigs."""
        line = self._lines.get(None)
        if line is None:
            line = self._lines[None] = ethproxy.work_push(self.notify)
        return line

    def line(self, clean: bool) -> bytes:
        """The notify under the proxy's id, encoded once per clean flag for all rigs."""
        line = self._lines.get(clean)
        if line is None:
            line = self._lines[clean] = ethstratum.notify_line(self.proxy_id, self.notify, clean)
        return line


class EthJobBook:
    """Proxy job ids -> jobs, bounded; marks a connection's jobs stale on a clean job."""

    __slots__ = ("jobs", "by_header", "_seq")

    def __init__(self) -> None:
        self.jobs: dict[str, EthJob] = {}
        self.by_header: dict[tuple[str, int], EthJob] = {}  # (header, connection id): getwork shares
        self._seq = 0

    def add(self, notify: EthNotify, conn: EthPoolConnection) -> EthJob:
        """Store a pool's job; a clean one makes the connection's earlier jobs stale."""
        self._seq += 1
        job = EthJob(f"{self._seq:x}", notify, conn, conn.difficulty)
        if notify.clean:
            for old in conn.jobs:
                old.stale = True
            conn.jobs.clear()
        conn.jobs.append(job)
        if len(conn.jobs) > 64:
            conn.jobs.pop(0).stale = True
        self.jobs[job.proxy_id] = job
        self.by_header[(notify.header_hash, conn.conn_id)] = job
        while len(self.jobs) > JOBS_KEPT:
            old = self.jobs.pop(next(iter(self.jobs)))
            self.by_header.pop((old.notify.header_hash, old.conn.conn_id), None)
        return job

    def get(self, proxy_id: str) -> EthJob | None:
        """The job a rig names, or None (unknown or forgotten)."""
        return self.jobs.get(proxy_id)


def _fresh(rig: EthRigSession | None, job: EthJob | None) -> tuple[int, str] | None:
    """Why a share for ``job`` cannot be forwarded (unknown, stale), or None."""
    if job is None:
        return errors.JOB_NOT_FOUND, "job not found"
    conn = job.conn
    if job.stale or not conn.alive or (rig is not None and not rig.may_submit_to(conn)):
        return errors.JOB_NOT_FOUND, "stale: job no longer current"
    return None


def _first(job: EthJob, pool_nonce: bytes) -> tuple[int, str] | bytes:
    """The nonce to forward, the first time it is seen for this job."""
    if pool_nonce in job.seen:
        return errors.DUPLICATE, "duplicate share"
    job.seen.add(pool_nonce)
    return pool_nonce


def check_share(rig: EthRigSession, job: EthJob | None, nonce: bytes) -> tuple[int, str] | bytes:
    """The checks the proxy can make without Ethash: the nonce to forward to the job's pool
    (the rig's prefix + its part, without the pool's extranonce), or (code, reason).

    A rig sends the nonce without its extranonce (the spec) or, like some miners, all 8
    bytes; the extranonce it mined under is the job's pool extranonce + the rig's prefix."""
    refused = _fresh(rig, job)
    if refused is not None:
        return refused
    assert job is not None
    expected = job.conn.extranonce + rig.prefix
    if len(nonce) == ethstratum.NONCE_SIZE:
        if nonce[:len(expected)] != expected:
            return errors.OTHER, "nonce does not carry the rig's extranonce"
        nonce = nonce[len(expected):]
    elif len(nonce) != ethstratum.NONCE_SIZE - len(expected):
        return errors.INVALID_PARAMS, (f"nonce has {len(nonce)} bytes, expected "
                                       f"{ethstratum.NONCE_SIZE - len(expected)}")
    return _first(job, rig.prefix + nonce)


def check_work(rig: EthRigSession, job: EthJob | None, nonce: bytes) -> tuple[int, str] | bytes:
    """A getwork share: known work from the rig's (recent) connection, not stale, not a
    duplicate; the nonce (the whole 8 bytes, the rig's own choice) to forward, or why not."""
    refused = _fresh(rig, job)
    if refused is not None:
        return refused
    assert job is not None
    return _first(job, nonce)
