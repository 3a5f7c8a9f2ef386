"""One configured pool: its settings, its connections, its health and its share ledger.

Connections are kept in a dict by id (a pool may hold one per rig, so removing one must not
scan the others), and the pool keeps its own rig count so routing never sums over them.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import PoolConfig
from .hashprice import HashpriceMeter
from .health import PoolHealth, PoolHealthMachine
from .placement import ConnectionIndex
from .stats import SlidingRatio, WindowedHistogram

if TYPE_CHECKING:
    from .rig import RigSession
    from .upstream import PoolConnection


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
        self.connections: dict[int, PoolConnection] = {}
        self.health = PoolHealthMachine(config.name)
        self.last_error = ""
        self.draining = False
        self.next_dial_at = 0.0
        self.backoff = 0.0
        self.counters = PoolCounters()
        self.latency = WindowedHistogram(health_window_s)
        self.rejects = SlidingRatio(100)
        self.timeouts = SlidingRatio(100)
        self.narrow = ""  # why rigs cannot be folded onto this pool, if so
        self.last_job_at = 0.0
        self.rig_total = 0  # rigs on this pool's connections, kept by the placement
        self.slots = ConnectionIndex()  # its connections by what they can take (placement)
        self._endpoint: tuple[PoolConfig, tuple[str, int]] | None = None
        # requests in flight to this pool, in send order (sent, connection, id): silence
        self.requests: deque[tuple[float, PoolConnection, int]] = deque()
        self.job_intervals: deque[float] = deque(maxlen=16)  # its own pace, for suspicion
        self.suspect_after = 0.0  # the silence bound now in force (see health.silent_bound)
        self.suspect_reason = ""
        # work (sum of accepted share difficulty) delivered since the active group formed:
        # the weighted split steers on this
        self.split_work = 0.0
        self.hashprice = HashpriceMeter()  # what its jobs say the hashrate earns

    @property
    def name(self) -> str:
        """The pool's name from the config: the key everywhere (API, events, routing)."""
        return self.config.name

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) from the URL, parsed once per config (a failover may dial thousands)."""
        cached = self._endpoint
        if cached is None or cached[0] is not self.config:
            cached = self._endpoint = (self.config, self.config.endpoint)
        return cached[1]

    @property
    def priority(self) -> int:
        """Lower is preferred; the active group is the usable pools of the best priority."""
        return self.config.priority

    @property
    def enabled(self) -> bool:
        """False when the operator or the config disabled the pool."""
        return self.config.enabled

    def ready_connections(self) -> list[PoolConnection]:
        """Every ready connection; a list of all of them, so not for the hot path."""
        return [c for c in self.connections.values() if c.ready]

    def first_ready(self) -> PoolConnection | None:
        """A ready connection, found without listing them all (a pool may hold thousands)."""
        for conn in self.connections.values():
            if conn.ready:
                return conn
        return None

    @property
    def has_ready(self) -> bool:
        """True when at least one connection can take rigs now."""
        return self.first_ready() is not None

    @property
    def usable(self) -> bool:
        """Can take hashrate now: enabled, not draining, healthy and proven (holding a job)."""
        return (self.enabled and not self.draining and self.health.state == PoolHealth.HEALTHY
                and self.has_ready)

    def rig_count(self) -> int:
        """Rigs on this pool's connections, without summing over them."""
        return self.rig_total

    def rigs(self) -> list[RigSession]:
        """Every rig on this pool's connections (a scan: for views, not routing)."""
        return [r for c in self.connections.values() for r in c.rigs.values()]

    def connection_count(self) -> int:
        """Connections of this pool in any state, dialing included."""
        return len(self.connections)

    def shares_in_flight(self) -> int:
        """Shares forwarded on this pool's connections and not yet answered."""
        return sum(c.shares_in_flight for c in self.connections.values())

    def __repr__(self) -> str:
        return f"<Pool {self.name} {self.health.state} conns={len(self.connections)}>"
