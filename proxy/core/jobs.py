"""Job translation: the coinb1 fold that makes pool switches invisible.

For each upstream job the proxy rewrites ``coinb1' = coinb1 + pool_extranonce1 + padding``;
a rig then builds ``coinb1' + prefix + extranonce2 + coinb2``, the very coinbase the pool
expects for ``pool_extranonce2 = padding + prefix + extranonce2``.  The rewritten notify is
the same bytes for every rig on that upstream connection, so it is encoded once.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..stratum import messages, work
from ..stratum.messages import Notify

if TYPE_CHECKING:
    from .upstream import UpstreamConnection


class Job:
    """One upstream job as rigs see it, shared by every rig on its upstream connection."""

    __slots__ = (
        "job_id", "upstream_job_id", "conn", "notify", "coinb1_down", "coinb1_state",
        "coinb2", "branch", "prevhash_header", "version", "nbits", "ntime", "padding",
        "difficulty", "target", "rig_extranonce1", "extranonce2_size", "line", "_line_clean",
        "_line_keepalive", "stale", "seen", "created",
    )

    def __init__(self, job_id: str, conn: UpstreamConnection, notify: Notify, padding: bytes,
                 difficulty: float, now: float, rig_extranonce1: bytes | None = None,
                 extranonce2_size: int = 0) -> None:
        self.job_id = job_id
        self.upstream_job_id = notify.job_id
        self.conn = conn
        self.notify = notify
        self.padding = padding
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
        h = self.coinb1_state.copy()
        h.update(prefix + extranonce2 + self.coinb2)
        root = hashlib.sha256(h.digest()).digest()
        for branch_hash in self.branch:
            root = hashlib.sha256(hashlib.sha256(root + branch_hash).digest()).digest()
        header = work.build_header(version, self.prevhash_header, root, ntime, self.nbits, nonce)
        return hashlib.sha256(hashlib.sha256(header).digest()).digest()
