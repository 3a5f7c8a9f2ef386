"""Pool side state: one configured pool, and each TCP connection we hold to it.

A pool may have several connections: aggregation carries up to 256**L rigs on one (L =
prefix bytes), more are recruited when prefixes collide, and with L = 0 every rig has its
own.  Connection state is pure data plus request bookkeeping; the engine decides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..config import PoolConfig
from ..stratum import messages, work
from ..stratum.framing import LineFramer
from .stats import SlidingRatio, WindowedHistogram

if TYPE_CHECKING:
    from .downstream import RigSession
    from .jobs import Job

# connection states
DIALING = "dialing"
HANDSHAKE = "handshake"  # TCP up, subscribe/authorize sent
READY = "ready"  # subscribed, authorized, holding a job
CLOSED = "closed"

class PoolHealth(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    DISABLED = "disabled"


HEALTHY, DEGRADED, DOWN, DISABLED = PoolHealth

JOBS_KEPT = 8


@dataclass(slots=True)
class Pending:
    """An outstanding request to a pool; shares carry what accounting needs."""

    kind: str  # "share", "subscribe", "authorize", "configure", "worker"
    sent_at: float
    rig: RigSession | None = None
    difficulty: float = 0.0
    worker: str = ""


class UpstreamConnection:
    __slots__ = (
        "conn_id", "pool", "host", "port", "state", "send", "framer", "extranonce1",
        "extranonce2_size", "difficulty", "version_mask", "jobs", "current_job", "rigs",
        "pending", "next_id", "last_rx", "last_job_at", "subscribed", "authorized",
        "authorized_workers", "connected_at", "retiring", "replaces", "exclusive",
        "close_reason", "passthrough", "extra_keepalive", "_diff_line", "_targets",
    )

    def __init__(self, conn_id: int, pool: PoolState, host: str, port: int,
                 max_line: int) -> None:
        self.conn_id = conn_id
        self.pool = pool
        self.host = host
        self.port = port
        self.state = DIALING
        self.send: Callable[[bytes], None] = _unconnected
        self.framer = LineFramer(max_line)
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.version_mask: int | None = None
        self.jobs: dict[str, Job] = {}
        self.current_job: Job | None = None
        self.rigs: dict[bytes, RigSession] = {}
        self.pending: dict[int, Pending] = {}
        self.next_id = 1
        self.last_rx = 0.0
        self.last_job_at = 0.0
        self.subscribed = False
        self.authorized = False
        self.authorized_workers: set[str] = set()
        self.connected_at = 0.0
        self.retiring = False  # being replaced (client.reconnect); rigs move when the new one is ready
        self.replaces: UpstreamConnection | None = None
        self.exclusive = False  # per-rig connection (prefix size 0)
        self.close_reason = ""
        self.passthrough = False  # too narrow for the fold: one rig, the pool's extranonce1 as-is
        self.extra_keepalive = 0.0
        self._diff_line = (0.0, b"")
        self._targets: dict[float, int] = {}

    @property
    def alive(self) -> bool:
        return self.state != CLOSED

    @property
    def ready(self) -> bool:
        return self.state == READY and not self.retiring

    def room(self, rig_e2: int) -> int:
        """Bytes of the pool's extranonce2 left for prefix + padding."""
        return self.extranonce2_size - rig_e2

    def difficulty_line(self) -> bytes:
        """mining.set_difficulty for the current difficulty, encoded once for all rigs."""
        if self._diff_line[0] != self.difficulty:
            self._diff_line = (self.difficulty, messages.notification(
                "mining.set_difficulty", [self.difficulty]))
        return self._diff_line[1]

    def target_cache(self, difficulty: float) -> int:
        target = self._targets.get(difficulty)
        if target is None:
            if len(self._targets) > 16:
                self._targets.clear()
            target = self._targets[difficulty] = work.difficulty_to_target(difficulty)
        return target

    def take_id(self) -> int:
        msg_id = self.next_id
        self.next_id += 1
        return msg_id

    def oldest_pending(self) -> float | None:
        """Requests are added in send order (dicts keep it), so the oldest is the first: O(1)
        on every tick however many shares a slow pool holds."""
        for pending in self.pending.values():
            return pending.sent_at
        return None

    def __repr__(self) -> str:
        return f"<Upstream {self.pool.name}#{self.conn_id} {self.state} rigs={len(self.rigs)}>"


def _unconnected(data: bytes) -> None:
    raise RuntimeError("upstream connection is not connected")


@dataclass(slots=True)
class PoolCounters:
    """Share accounting for one pool.  Every share owed to the pool (locally valid and
    meeting its target) is counted in ``forwarded`` and ends as exactly one of
    ``accepted``, ``rejected[reason]``, ``timeouts`` (no verdict in time) or ``lost[reason]``
    (connection gone before a verdict, or before it could be written), or is still in
    flight: forwarded == accepted + sum(rejected) + timeouts + sum(lost) + in flight."""

    forwarded: int = 0
    accepted: int = 0
    accepted_difficulty: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    timeouts: int = 0
    lost: Counter = field(default_factory=Counter)  # reason -> count (never delivered)
    late_answers: int = 0


class PoolState:
    """One [[pools]] entry: its config, connections, health and counters."""

    def __init__(self, config: PoolConfig, order: int, health_window_s: float) -> None:
        self.config = config
        self.order = order  # position in the config file: tie-break within a priority
        self.connections: list[UpstreamConnection] = []
        self.health = DOWN
        self.health_reason = "not connected yet"
        self.last_error = ""
        self.healthy_since: float | None = None
        self.ever_failed = False
        self.draining = False
        self.next_dial_at = 0.0
        self.backoff = 0.0
        self.counters = PoolCounters()
        self.latency = WindowedHistogram(health_window_s)
        self.rejects = SlidingRatio(100)
        self.timeouts = SlidingRatio(100)
        self.narrow = ""  # why rigs cannot be folded onto this pool, if so
        self.last_job_at = 0.0
        self.extra: dict[str, Any] = {}
        # work (sum of accepted share difficulty) delivered since the active group formed:
        # the weighted split steers on this
        self.split_work = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def priority(self) -> int:
        return self.config.priority

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def ready_connections(self) -> list[UpstreamConnection]:
        return [c for c in self.connections if c.ready]

    @property
    def has_ready(self) -> bool:
        return any(c.ready for c in self.connections)

    @property
    def usable(self) -> bool:
        """Can take hashrate now: enabled, not draining, healthy and proven (holding a job)."""
        return self.enabled and not self.draining and self.health == HEALTHY and self.has_ready

    def rig_count(self) -> int:
        return sum(len(c.rigs) for c in self.connections)

    def rigs(self) -> list:
        return [r for c in self.connections for r in c.rigs.values()]

    def connection_count(self) -> int:
        return len(self.connections)

    def shares_in_flight(self) -> int:
        return sum(1 for c in self.connections for p in c.pending.values() if p.kind == "share")

    def __repr__(self) -> str:
        return f"<Pool {self.name} {self.health} conns={len(self.connections)}>"
