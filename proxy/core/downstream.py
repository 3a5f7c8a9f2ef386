"""Rig side state: one TCP connection from a rig.

Firmware pipelines configure/subscribe/authorize in one write and in any order, so the
session is a set of flags rather than a strict sequence; the engine answers each request
as it comes and sends work once the rig is both subscribed and authorized.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..stratum.framing import LineFramer
from .stats import RateMeter

if TYPE_CHECKING:
    from .jobs import Job
    from .upstream import PoolState, UpstreamConnection

RECENT_CONNS = 3


class RigSession:
    __slots__ = (
        "rig_id", "peer", "send", "close", "framer", "subscribed", "user_agent", "workers",
        "extranonce_subscribed", "prefix", "requested_mask", "version_mask", "difficulty",
        "conn", "recent_conns", "pool", "suggested_difficulty", "connected_at",
        "last_share_at", "accepted", "rejected", "accepted_difficulty", "hashrate", "closed",
        "last_sent_job", "upstream_worker", "notifies", "last_work_at", "extranonce1",
        "extranonce2_size", "pending_subscribe", "leaving", "tokens", "tokens_at",
        "rate_limited", "address",
    )

    def __init__(self, rig_id: int, peer: str, send: Callable[[bytes], None],
                 close: Callable[[], None], max_line: int, now: float) -> None:
        self.rig_id = rig_id
        self.peer = peer
        self.send = send
        self.close = close
        self.framer = LineFramer(max_line)
        self.subscribed = False
        self.user_agent = ""
        self.workers: list[str] = []
        self.extranonce_subscribed = False
        self.prefix: bytes = b""
        self.requested_mask: int | None = None  # None: the rig did not ask for version rolling
        self.version_mask = 0
        self.difficulty: float | None = None
        self.conn: UpstreamConnection | None = None
        self.recent_conns: list[UpstreamConnection] = []
        self.pool: PoolState | None = None
        self.suggested_difficulty: float | None = None
        self.connected_at = now
        self.last_share_at = 0.0
        self.accepted = 0
        self.rejected: Counter = Counter()
        self.accepted_difficulty = 0.0
        self.hashrate = RateMeter(start=now)
        self.closed = False
        self.last_sent_job: Job | None = None
        self.upstream_worker = ""
        self.notifies = 0
        self.last_work_at = 0.0
        # the extranonce layout this rig uses now (its prefix and the proxy's size, unless it
        # was moved onto a too-narrow pool with mining.set_extranonce)
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.address = peer.rsplit(":", 1)[0]
        self.tokens = 0.0  # request token bucket (filled by the engine)
        self.tokens_at = now
        self.rate_limited = 0
        self.leaving = False  # sent client.reconnect: waiting for it to come back fresh
        self.pending_subscribe: object = None  # subscribe id held until a narrow pool answers

    @property
    def state(self):
        from enum import Enum
        class _S(Enum):
            X = "connected"
        return _S.X

    @property
    def pool_name(self) -> str | None:
        return self.pool.name if self.pool is not None and self.conn is not None else None

    @property
    def authorized(self) -> bool:
        return bool(self.workers)

    @property
    def worker(self) -> str:
        return self.workers[0] if self.workers else ""

    def may_submit_to(self, conn: UpstreamConnection) -> bool:
        return conn is self.conn or conn in self.recent_conns

    def __repr__(self) -> str:
        return f"<Rig {self.rig_id} {self.worker or '-'} @{self.peer}>"
