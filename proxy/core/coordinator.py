"""The coordinator: wires rig sessions, pool connections, placement, health and routing.

Sans-I/O: the glue feeds bytes and transport events in (with ``now`` from its clock), the
core writes through the ``send`` callables the glue attached, asks the glue to dial or close
pool connections through ``CoreIO``, and says when it next needs to run (``tick`` returns
it; ``CoreIO.wake`` moves it earlier).  Decisions live in the modules it wires: ``rig`` and
``upstream`` (the two protocols), ``handshake``, ``sharepath`` and ``shares`` (a share's
way), ``placement`` and ``handover`` (moving rigs), ``health`` and ``router`` (where the
hashrate goes), ``upstreams`` (the pool side), ``control`` (operators), ``timers``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from ..config import Config
from .corebase import CoreBase
from .events import EventLog, PoolSwitched
from .extranonce import PrefixAllocator
from .handover import Mover
from .handshake import Handshake
from .jobs import JobBook
from .layout import Layout
from .placement import Placement
from .pool import PoolState
from .rig import RigPolicy, RigSession
from .rig_base import RigState
from .rig_requests import (
    AuthorizeRequest,
    BadLine,
    ConfigureRequest,
    RateLimited,
    RigRequest,
    SubscribeRequest,
    Violation,
)
from .rigstats import RigTotals
from .rigwatch import RigWatch
from .router import Router
from .sharepath import ShareDesk
from .silence import SilenceWatch
from .timers import Timers
from .upstream import PoolConnection
from .upstreams import Upstreams
from .vardiff import Vardiff

log = logging.getLogger("proxy.core")


class CoreIO(Protocol):
    """What the core asks of the I/O shell."""

    def dial(self, conn: PoolConnection) -> None:
        """Open a connection to conn.host:conn.port; report via pool_connected/pool_closed."""

    def close_pool(self, conn: PoolConnection) -> None:
        """Close the transport; the core has already accounted for the connection."""

    def wake(self, at: float) -> None:
        """Call ``tick`` no later than ``at`` (a deadline earlier than the last one given)."""


class ProxyCore(CoreBase):
    """One proxy's decisions.  Entry points: ``rig_*`` and ``pool_*`` for transport events,
    ``tick`` for time; ``operator`` takes operators' changes; ``view`` (``CoreView``) reads."""

    def __init__(self, config: Config, io: CoreIO, now: float, wall_offset: float = 0.0,
                 prefix_start: int = 0, events: EventLog | None = None,
                 remembered_layout: dict[str, int] | None = None) -> None:
        self.config = config
        self.settings = s = config.proxy
        self.io = io
        self.wall_offset = wall_offset
        self.started_at = now
        self.layout = Layout(s, remembered_layout or {}, now)
        self.prefix_start = prefix_start
        self.prefixes = PrefixAllocator(self.layout.prefix_size or 0, prefix_start)
        self.router = Router(s.failback_hold_s)
        self.events = events if events is not None else EventLog()
        self.pools = {p.name: PoolState(p, i, s.health_window_s) for i, p in enumerate(config.pools)}
        self.rigs: dict[int, RigSession] = {}
        self.totals: Counter[str] = Counter({k: 0 for k in (
            "submits", "accepted", "rejected", "forwarded", "below_pool_target", "outside_pool_mask",
            "rigs_connected_total",
            "rigs_disconnected", "bad_lines", "pool_switches", "split_moves", "rigs_refused",
            "rigs_timed_out", "rate_limited")})
        self.jobs = JobBook(self.layout)
        self.placement = Placement()
        self.vardiff = Vardiff(s)
        self.shares = ShareDesk(s, self.jobs, self.totals, self.vardiff)
        self.handshake = Handshake(self)
        self.upstreams = Upstreams(self)
        self.timers = Timers(self, now)
        self.silence = SilenceWatch(self)
        self.rigwatch = RigWatch(self, now)
        self.mover = Mover(self)
        self.rig_totals = RigTotals()  # hashrate sums for large farms, built by tick()
        self._policy = RigPolicy(s.max_requests_per_s, s.allowed_workers, s.max_line_bytes)
        self._next_rig_id = 1
        self._active_names: tuple[str, ...] = ()
        from .control import Operator  # control needs PoolState and this class: imported late

        self.operator = Operator(self)
        self.upstreams.maintain(now)

    # ------------------------------------------------------------------ shared services

    @property
    def e2_size(self) -> int:
        """The rigs' extranonce2_size (0 until the layout is chosen)."""
        return self.layout.e2_size or 0

    # ------------------------------------------------------------------ rig side

    def rig_connected(self, peer: str, send: Callable[[bytes], None], close: Callable[[], None],
                      now: float) -> RigSession:
        """A rig's transport is up: a session for it, or closed at once if admission refuses it."""
        rig = RigSession(self._next_rig_id, peer, send, close, self._policy, now)
        self._next_rig_id += 1
        self.rigs[rig.rig_id] = rig
        self.totals["rigs_connected_total"] += 1
        refusal = self.timers.admit(rig, len(self.rigs), now)
        if refusal:
            self.totals["rigs_refused"] += 1
            self.close_rig(rig, refusal, now)
        return rig

    def rig_data(self, rig: RigSession, data: bytes, now: float) -> None:
        """Feed bytes from a rig; each request is handled before the next is read, and a failing
        one costs an error answer, never the process."""
        if not rig.closed:
            rig.receive(data, now, self, self.shares)

    def rig_request(self, rig: RigSession, request: RigRequest, now: float) -> None:
        """Everything else a rig's session could not answer alone, one request at a time."""
        kind = type(request)
        try:
            if kind is SubscribeRequest:
                self.handshake.subscribe(rig, request, now)
            elif kind is AuthorizeRequest:
                self.handshake.authorize(rig, request, now)
            elif kind is ConfigureRequest:
                self.handshake.configure(rig, request)
            elif kind is RateLimited:
                self.totals["rate_limited"] += 1
            elif kind is BadLine:
                self.totals["bad_lines"] += 1
            elif kind is Violation:
                self.totals["bad_lines"] += request.bad_line
                self.close_rig(rig, request.reason, now)
        except Exception as exc:  # a bug (or a refused request) costs one answer, never the process
            rig.request_failed(request, exc)

    def rig_closed(self, rig: RigSession, now: float) -> None:
        """The rig's transport is gone (or we closed it): release everything it held."""
        if rig.closed:
            return
        rig.to(RigState.CLOSED)
        self.totals["rigs_disconnected"] += 1
        self.rigs.pop(rig.rig_id, None)
        self.timers.release(rig)
        self.handshake.forget(rig)
        self.vardiff.forget(rig)
        conn = self.placement.gone(rig)
        if conn is not None:
            self.upstreams.retire_idle(conn, now, even_if_last=conn.exclusive)
        if rig.has_prefix:
            self.prefixes.release(rig.prefix)

    def place(self, rig: RigSession, pool: PoolState, now: float) -> None:
        """Put the rig on a connection of ``pool`` (see ``Mover.place``)."""
        self.mover.place(rig, pool, now)

    # ------------------------------------------------------------------ pool side

    def pool_connected(self, conn: PoolConnection, send: Callable[[bytes], None], now: float) -> None:
        """The glue's report that a dialed connection's TCP is up: it sends the pool handshake."""
        self.upstreams.connected(conn, send, now)

    def pool_data(self, conn: PoolConnection, data: bytes, now: float) -> None:
        """Feed bytes from a pool connection; a protocol failure fails the pool, not the process."""
        self.upstreams.data(conn, data, now)

    def pool_closed(self, conn: PoolConnection, reason: str, now: float) -> None:
        """The transport closed or the dial failed (the glue's report)."""
        self.upstreams.closed(conn, reason, now)

    # ------------------------------------------------------------------ routing

    def reroute(self, now: float, reason: str, force: bool = False) -> None:
        """Recompute the active group; move rigs if it changed (or if forced, or if some
        rig waits on no connection)."""
        group = self.router.active_group(self.pools.values(), now)
        names = tuple(p.name for p in group)
        hold_check_at = self.timers.hold_check_at = self.router.hold_expires_at(self.pools.values(), now)
        if hold_check_at is not None:
            self.timers.due(hold_check_at)
        # rigs on no connection wait for a plan, unless a plan is still being carried out
        waiting = bool(group) and bool(self.placement.unplaced) and not self.mover.pending
        if names == self._active_names and not force and not waiting:
            return
        previous = self._active_names
        self._active_names = names
        if names != previous:
            for pool in self.pools.values():
                pool.split_work = 0.0
            if len(names) > 1:
                self.timers.due(self.timers.next_split_at)
        if not group:
            if previous:
                self.totals["pool_switches"] += 1
                self.publish(PoolSwitched(from_pools=list(previous), to_pools=[], reason=reason,
                                          rigs_moved=0, note="no usable pool: rigs keep their "
                                          "connections and last job"), now)
            return
        self.handshake.release(now)
        rigs = [r for r in self.rigs.values() if r.placeable]
        self.mover.layout_moves.clear()
        plan = self.router.plan(rigs, group)
        self.mover.carry_out(plan, now)
        if names != previous:
            self.totals["pool_switches"] += 1
            self.publish(PoolSwitched(
                from_pools=list(previous), to_pools=list(names),
                reason=reason if previous else "startup: first pool ready", rigs_moved=len(plan),
                extranonce_changes=dict(self.mover.layout_moves)), now)
        self.upstreams.maintain(now)

    # ------------------------------------------------------------------ time and operators

    def tick(self, now: float) -> float:
        """Run what is due; returns when the core next needs to run."""
        return self.timers.run(now)

    def shutdown(self, now: float) -> None:
        """Close every pool connection (after the rigs are gone); shares still in flight are counted lost."""
        for pool in self.pools.values():
            for conn in list(pool.connections.values()):
                self.upstreams.close(conn, "proxy shutting down", now)
