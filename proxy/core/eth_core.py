"""The EthereumStratum/1.0.0 core for one GPU listener: rigs, placement and failover.

A second session type and job type beside the SV1 core, not branches through it: the SV1
coordinator (``ProxyCore``) serves the ASIC listener, an ``EthCore`` serves each GPU
listener, and each fails over on its own.  What is protocol-neutral is reused as is: the
pool's state and health machine (``PoolState``, ``PoolHealthMachine``), the router
(active group, failback hold-down, weights), silence and suspicion (``SilenceWatch``),
the events and the glue (``net.server.RigProtocol``, ``net.client.Dialer`` drive this
core through the same entry points: ``rig_*``, ``pool_*``, ``tick``).

The switch: each rig keeps its own nonce prefix (``ETH_PREFIX_SIZE`` bytes, unique among
the rigs of one pool connection) under the pool's extranonce.  Moving it to another pool
sends ``mining.set_extranonce`` (the new pool's extranonce + its prefix) and a clean job;
a rig that never sent ``mining.extranonce.subscribe`` gets ``client.reconnect`` instead,
counted in the switch event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..stratum import errors, ethstratum, messages
from ..stratum.errors import StratumError
from .corebase import CoreBase
from .eth_jobs import EthJob, EthJobBook, check_share
from .eth_pools import EthUpstreams
from .eth_rig import EthRigSession
from .eth_split import steer
from .eth_upstream import EthPoolConnection
from .events import EventLog, PoolSwitched
from .pool import PoolState
from .rig import RigPolicy
from .rig_base import RECENT_CONNS, RigState
from .rig_requests import (
    AuthorizeRequest,
    BadLine,
    RateLimited,
    RigRequest,
    SubmitRequest,
    SubscribeRequest,
    Violation,
)
from .router import Router
from .silence import SilenceWatch

log = logging.getLogger("proxy.core.eth")

ETH_PREFIX_SIZE = 1  # bytes of nonce the proxy takes per rig: 256 rigs per pool connection
IDLE_TICK_S = 1.0


class EthCore(CoreBase):
    """One GPU listener's decisions (same entry points as ``ProxyCore``)."""

    PROTOCOL = ethstratum.PROTOCOL
    SESSION: type[EthRigSession] = EthRigSession  # the getwork dialect's core swaps these two
    CONNECTION: type[EthPoolConnection] = EthPoolConnection

    def __init__(self, config: Config, io: Any, now: float, *, listener: str = "gpu",
                 wall_offset: float = 0.0, events: EventLog | None = None) -> None:
        self.config = config
        self.settings = s = config.proxy
        self.io = io
        self.listener = listener
        self.wall_offset = wall_offset
        self.started_at = now
        self.events = events if events is not None else EventLog()
        self.pools = {p.name: PoolState(p, i, s.health_window_s) for i, p in enumerate(config.pools)}
        self.router = Router(s.failback_hold_s)
        self.jobs = EthJobBook()
        self.rigs: dict[int, EthRigSession] = {}
        self.waiting: dict[int, EthRigSession] = {}  # placed on a pool whose connection is dialing
        self.totals: Counter[str] = Counter({k: 0 for k in (
            "submits", "accepted", "rejected", "forwarded", "rigs_connected_total",
            "rigs_disconnected", "bad_lines", "pool_switches", "rate_limited", "set_extranonce",
            "client_reconnect", "rigs_refused", "rigs_timed_out", "lost", "split_moves")})
        self._policy = RigPolicy(s.max_requests_per_s, s.allowed_workers, s.max_line_bytes)
        self._next_rig_id = 1
        self._next_prefix = 0
        self.prefix_load: Counter[bytes] = Counter()  # live rigs per prefix
        self._active_names: tuple[str, ...] = ()
        self.deadline = now + IDLE_TICK_S
        self.hold_check_at: float | None = None
        self.next_split_at = now + s.split_slice_s  # the weighted split's next slice (eth_split)
        self.timers = self  # SilenceWatch asks ``core.timers.due``
        self.upstreams = EthUpstreams(self)
        self.silence = SilenceWatch(self)  # type: ignore[arg-type]  # duck-typed on the core
        from .control import Operator  # as in ProxyCore: priorities, weights, enabled, drain, reload

        self.operator = Operator(self)  # type: ignore[arg-type]  # duck-typed on the core
        self.upstreams.maintain(now)

    # ------------------------------------------------------------------ shared services

    def due(self, at: float) -> None:
        """Run ``tick`` no later than ``at``."""
        if at < self.deadline:
            self.deadline = at
            self.io.wake(at)

    # ------------------------------------------------------------------ rig side

    def _prefix(self) -> bytes:
        """The next prefix no live rig holds (by rotation; collisions only beyond 256 rigs,
        and then two rigs with one prefix never share a connection)."""
        held = {r.prefix for r in self.rigs.values()} if len(self.rigs) < 256 else set()
        for _ in range(256):
            value = self._next_prefix
            self._next_prefix = (value + 1) % 256
            prefix = value.to_bytes(ETH_PREFIX_SIZE, "big")
            if prefix not in held:
                return prefix
        return prefix

    def rig_connected(self, peer: str, send: Callable[[bytes], None], close: Callable[[], None],
                      now: float) -> EthRigSession:
        """A GPU rig's transport is up."""
        rig = self.SESSION(self._next_rig_id, peer, send, close, self._policy, self._prefix(), now)
        self.prefix_load[rig.prefix] += 1
        self._next_rig_id += 1
        self.rigs[rig.rig_id] = rig
        self.totals["rigs_connected_total"] += 1
        if len(self.rigs) > self.settings.max_rigs:
            self.totals["rigs_refused"] += 1
            self.close_rig(rig, f"max_rigs {self.settings.max_rigs} reached", now)
        return rig

    def rig_data(self, rig: EthRigSession, data: bytes, now: float) -> None:
        """Bytes from a rig; a failing request costs an error answer, never the process."""
        if not rig.closed:
            rig.receive(data, now, self, self)

    def rig_request(self, rig: EthRigSession, request: RigRequest, now: float) -> None:
        """What the session could not answer alone."""
        kind = type(request)
        msg = getattr(request, "msg", None)
        try:
            if kind is SubmitRequest:  # the getwork dialect's eth_submitWork
                self.submit(rig, request.msg, now)  # type: ignore[union-attr]
            elif kind is SubscribeRequest:
                self.place_new(rig, now)
            elif kind is AuthorizeRequest:
                self.start_mining(rig)
            elif kind is RateLimited:
                self.totals["rate_limited"] += 1
            elif kind is BadLine:
                self.totals["bad_lines"] += 1
            elif kind is Violation:
                self.totals["bad_lines"] += request.bad_line  # type: ignore[union-attr]
                self.close_rig(rig, request.reason, now)  # type: ignore[union-attr]
        except StratumError as exc:
            rig.reply_error(msg.id if msg else None, exc.code, exc.message)
        except Exception:  # a bug costs one answer, never the process
            log.exception("error handling %s for eth rig %s", kind.__name__, rig.rig_id)
            rig.reply_error(msg.id if msg else None, errors.OTHER, "internal error")

    def rig_closed(self, rig: EthRigSession, now: float) -> None:
        """The rig's transport is gone: release what it held."""
        if rig.closed:
            return
        rig.to(RigState.CLOSED)
        self.totals["rigs_disconnected"] += 1
        self.rigs.pop(rig.rig_id, None)
        self.waiting.pop(rig.rig_id, None)
        self.prefix_load[rig.prefix] -= 1
        self.detach(rig)

    def moves_in_place(self, rig: EthRigSession) -> bool:
        """Can the rig change pools without reconnecting (mining.set_extranonce)?"""
        return rig.extranonce_subscribed

    def connections_wanted(self) -> int:
        """Connections each enabled pool keeps, so that any one of them can take every rig
        at once (a warm backup): one per ``256 ** ETH_PREFIX_SIZE`` rigs."""
        return max(1, max(self.prefix_load.values(), default=0))

    def start_mining(self, rig: EthRigSession) -> None:
        """Once subscribed and authorized: the rig's first job."""
        conn = rig.conn
        if rig.state is RigState.ACTIVE and rig.last_job is None and conn is not None \
                and conn.current_job is not None:
            rig.send_job(conn.current_job, True)

    # ------------------------------------------------------------------ placement

    def place_new(self, rig: EthRigSession, now: float) -> None:
        """A subscribe: its answer needs a pool's extranonce, so the rig joins a pool now
        (or waits, subscribe held, until one is up)."""
        pool = self.router.pick(self.group())
        if pool is not None:
            self.place(rig, pool, now)

    def detach(self, rig: EthRigSession) -> None:
        """Take the rig off its connection (it may still submit old jobs there for a while)."""
        conn = rig.conn
        if conn is None:
            return
        conn.rigs.pop(rig.rig_id, None)
        if conn.prefixes.get(rig.prefix) == rig.rig_id:
            del conn.prefixes[rig.prefix]
        conn.pool.rig_total -= 1
        rig.recent_conns = [c for c in rig.recent_conns if c is not conn and c.alive][-(RECENT_CONNS - 1):]
        rig.recent_conns.append(conn)
        rig.conn = None

    def place(self, rig: EthRigSession, pool: PoolState, now: float, moves: Counter | None = None) -> None:
        """Put the rig on a ready connection of ``pool`` with its prefix free; if none can
        take it, the rig waits for the connection ``maintain`` dials."""
        conn = next((c for c in pool.connections.values() if c.ready and c.takes(rig.prefix)), None)
        if conn is None:
            self.detach(rig)
            rig.pool = pool
            self.waiting[rig.rig_id] = rig
            self.upstreams.maintain(now)  # more rigs than connections have prefixes: dial
            return
        self.attach(rig, conn, moves)

    def attach(self, rig: EthRigSession, conn: EthPoolConnection, moves: Counter | None = None) -> None:
        """The rig mines on ``conn`` from now: its extranonce follows, then a clean job."""
        self.waiting.pop(rig.rig_id, None)
        if rig.conn is conn:
            return
        self.detach(rig)
        extranonce = conn.extranonce + rig.prefix
        if rig.extranonce is not None and rig.extranonce != extranonce:
            if not rig.extranonce_subscribed:
                rig.ask_to_reconnect()
                self.totals["client_reconnect"] += 1
                if moves is not None:
                    moves["client.reconnect"] += 1
                return
            rig.set_extranonce(extranonce)
            self.totals["set_extranonce"] += 1
            if moves is not None:
                moves["set_extranonce"] += 1
        conn.rigs[rig.rig_id] = rig
        conn.prefixes[rig.prefix] = rig.rig_id
        conn.pool.rig_total += 1
        rig.conn = conn
        rig.pool = conn.pool
        if rig.extranonce is None:
            rig.answer_subscribe(extranonce)
        if rig.state is RigState.ACTIVE and conn.current_job is not None:
            rig.send_job(conn.current_job, True)

    def connection_ready(self, conn: EthPoolConnection, now: float) -> None:
        """Rigs that waited for a connection of this pool join it."""
        for rig in [r for r in self.waiting.values() if r.pool is conn.pool]:
            if conn.takes(rig.prefix):
                self.attach(rig, conn)

    def reroute(self, now: float, reason: str, force: bool = False) -> None:
        """Recompute the active group; move rigs if it changed (or if forced)."""
        group = self.router.active_group(self.pools.values(), now)
        names = tuple(p.name for p in group)
        self.hold_check_at = self.router.hold_expires_at(self.pools.values(), now)
        if self.hold_check_at is not None:
            self.due(self.hold_check_at)
        orphans = any(r.conn is None and r.rig_id not in self.waiting for r in self.rigs.values()
                      if r.placeable)
        if names == self._active_names and not force and not orphans:
            return
        previous, self._active_names = self._active_names, names
        if names != previous:
            for pool in self.pools.values():
                pool.split_work = 0.0
        if not group:
            if previous:
                self.totals["pool_switches"] += 1
                self.publish(PoolSwitched(from_pools=list(previous), to_pools=[], reason=reason, rigs_moved=0,
                                          note=f"listener {self.listener}: no usable pool; rigs keep "
                                               "their connections and last job"), now)
            return
        rigs = [r for r in self.rigs.values() if r.placeable]
        plan = self.router.plan(rigs, group)  # type: ignore[arg-type]  # duck-typed rigs
        moves: Counter[str] = Counter()
        for rig_id, pool in plan.items():
            self.place(self.rigs[rig_id], pool, now, moves)
        if names != previous:
            self.totals["pool_switches"] += 1
            self.publish(PoolSwitched(
                from_pools=list(previous), to_pools=list(names),
                reason=reason if previous else "startup: first pool ready", rigs_moved=len(plan),
                note=f"listener {self.listener} ({self.PROTOCOL})",
                extranonce_changes=dict(moves)), now)

    # ------------------------------------------------------------------ shares

    def submit(self, rig: EthRigSession, msg: messages.Message, now: float) -> None:
        """Check what can be checked without Ethash, forward, answer with the pool's verdict;
        a failing submit costs an error answer (counted a reject), never the process."""
        self.totals["submits"] += 1
        try:
            self._submit(rig, msg, now)
        except StratumError as exc:
            rig.rejected[exc.message] += 1
            rig.reply_error(msg.id, exc.code, exc.message)
        except Exception:
            log.exception("error handling a submit of eth rig %s", rig.rig_id)
            rig.rejected["internal error"] += 1
            rig.reply_error(msg.id, errors.OTHER, "internal error")

    def _submit(self, rig: EthRigSession, msg: messages.Message, now: float) -> None:
        if rig.state is not RigState.ACTIVE:
            raise StratumError(errors.UNAUTHORIZED, "subscribe and authorize first")
        share = ethstratum.parse_submit(msg.params)
        job = self.jobs.get(share.job_id)
        checked = check_share(rig, job, share.nonce)
        self.forward(rig, msg, job, checked, checked, now)

    def forward(self, rig: EthRigSession, msg: messages.Message, job: EthJob | None,
                checked: tuple[int, str] | bytes, payload: Any, now: float) -> None:
        """Answer a share that failed the checks (``checked`` is (code, reason)), or forward
        ``payload`` to its job's connection: the pool's verdict answers the rig."""
        if type(checked) is tuple:
            code, reason = checked
            rig.rejected[reason] += 1
            self.totals["rejected"] += 1
            rig.reply_error(msg.id, code, reason)
            return
        assert job is not None
        job.conn.submit(rig, msg.id, job, payload, job.conn.pool.config.user, now)
        rig.in_flight += 1
        job.conn.pool.counters.forwarded += 1
        self.totals["forwarded"] += 1

    # ------------------------------------------------------------------ glue entry points

    def pool_connected(self, conn: EthPoolConnection, send: Callable[[bytes], None], now: float) -> None:
        """TCP to a pool is up."""
        self.upstreams.connected(conn, send, now)

    def pool_data(self, conn: EthPoolConnection, data: bytes, now: float) -> None:
        """Bytes from a pool."""
        self.upstreams.data(conn, data, now)

    def pool_closed(self, conn: EthPoolConnection, reason: str, now: float) -> None:
        """A pool transport closed or its dial failed."""
        self.upstreams.closed(conn, reason, now)

    def tick(self, now: float) -> float:
        """Run what is due; returns when to run next."""
        self.deadline = float("inf")
        self._overdue(now)
        self.silence.check(now)
        stale_at = self.upstreams.check_stale(now)
        self.upstreams.check_health(now)
        if self.hold_check_at is not None and now >= self.hold_check_at:
            self.hold_check_at = None
            self.reroute(now, "failback: hold-down over")
        if len(self._active_names) > 1 and now >= self.next_split_at:
            self.next_split_at = now + self.settings.split_slice_s
            steer(self, now)
        self.upstreams.maintain(now)
        times = [now + IDLE_TICK_S]
        if len(self._active_names) > 1:
            times.append(self.next_split_at)
        for deadline in (self.silence.next_deadline(), self.hold_check_at, self.upstreams.next_dial(),
                         stale_at):
            if deadline is not None:
                times.append(deadline)
        self.deadline = max(min(times), now)
        return self.deadline

    def _overdue(self, now: float) -> None:
        """Close rigs that neither subscribed nor authorized within ``auth_timeout_s`` (a rig
        whose subscribe waits for a pool is not overdue)."""
        limit = self.settings.auth_timeout_s
        for rig in [r for r in self.rigs.values() if r.state is RigState.HANDSHAKE
                    and now - r.connected_at > limit and not (r.workers and r.subscribe_held is not None)]:
            self.totals["rigs_timed_out"] += 1
            self.close_rig(rig, f"not subscribed and authorized within {limit:g}s", now)

    def shutdown(self, now: float) -> None:
        """Close every pool connection (after the rigs are gone)."""
        self.upstreams.shutdown(now)
