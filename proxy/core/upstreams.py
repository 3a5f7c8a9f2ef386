"""The pool side: dialing, what each pool connection reports, and what its loss costs.

Acts on the events a ``PoolConnection`` yields: a new job goes to every rig on it (encoded
once), a new difficulty or mask likewise, a pool whose extranonce turns out too narrow for
the fold is marked and its extra rigs moved, a ``client.reconnect`` dials a replacement that
takes over the rigs when ready.  A connection that fails takes its pool DOWN (one health
event), closes the pool's other connections, and the rigs it carried are rerouted once, for
all of them together.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import pool_events as ev
from .events import (
    LayoutChosen,
    PoolExtranonce,
    PoolMessage,
    PoolNarrow,
    PoolReconnectRequested,
    PoolSetExtranonce,
    RigsExtranonceChanged,
)
from .extranonce import PrefixAllocator
from .handover import fan_out_difficulty, fan_out_job, fan_out_version_mask
from .health import PoolHealth
from .sharepath import ShareDesk
from .silence import ANSWERS, JOBS
from .upstream import ConnState, Pending, PoolConnection

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .pool import PoolState

log = logging.getLogger("proxy.core")

CLOSE_BATCH = 256  # a failed pool's other connections closed per run of the core


class Upstreams:
    """Pool connections for one core: opened, fed, closed."""

    __slots__ = ("core", "_next_conn_id", "doomed")

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self._next_conn_id = 1
        # a failed pool's other connections, closed CLOSE_BATCH per run of the core: with one
        # connection per rig they are 10,000, and closing all in the failing call held the
        # event loop ~30 ms
        self.doomed: deque[PoolConnection] = deque()  # each with its reason in ``conn.doomed``

    # ------------------------------------------------------------------ opening

    def dial(self, pool: PoolState, now: float, host: str = "", port: int = 0) -> PoolConnection:
        """Open a connection to the pool (or to a client.reconnect target); rigs may be attached
        at once and get work when it is ready."""
        core = self.core
        cfg_host, cfg_port = pool.endpoint
        conn = PoolConnection(self._next_conn_id, pool, host or cfg_host, port or cfg_port,
                              core.settings.max_line_bytes)
        self._next_conn_id += 1
        conn.exclusive = (core.layout.decided and core.prefixes.size == 0) or bool(pool.narrow)
        conn.watch = core.silence.watch
        core.placement.added(conn)
        core.io.dial(conn)
        return conn

    def maintain(self, now: float) -> None:
        """Keep one warm connection per hot pool (and cold pools when needed); redial with
        backoff; close cold standbys nobody needs."""
        core = self.core
        for pool in core.pools.values():
            if self._wanted(pool):
                if core.placement.index(pool).live == 0 and now >= pool.next_dial_at:
                    self.dial(pool, now)
            else:
                for conn in list(pool.connections.values()):
                    if conn.alive and not conn.rigs and not conn.pending:
                        self.close(conn, "cold standby not needed", now)

    def _wanted(self, pool: PoolState) -> bool:
        if not pool.enabled:
            return False
        if pool.config.standby == "hot":
            return True
        better = [p for p in self.core.pools.values() if p.usable and p.priority < pool.priority]
        return not better or pool.rig_count() > 0

    def connected(self, conn: PoolConnection, send: Callable[[bytes], None], now: float) -> None:
        """TCP is up: send the pool handshake, unless the connection was closed meanwhile."""
        if conn.state is ConnState.CLOSED or conn.doomed:
            return
        conn.connected(send, conn.pool.config.password, now)

    # ------------------------------------------------------------------ bytes in

    def data(self, conn: PoolConnection, data: bytes, now: float) -> None:
        """Act on each event in the pool's bytes; a protocol failure or a bug fails the pool.
        A doomed connection's bytes are ignored, as a closed one's (its pool failed)."""
        if conn.state is ConnState.CLOSED or conn.doomed:
            return
        try:
            conn.receive(data, now, self)
        except Exception:
            log.exception("error handling a message from pool %s", conn.pool.name)
            self.fail(conn, "internal error on a pool message", now)

    def share_answered(self, conn: PoolConnection, pending: Pending, accepted: bool, reason: str,
                       now: float) -> None:
        """The pool's verdict on a forwarded share (the hot path of the pool side)."""
        pool = conn.pool
        if ShareDesk.answered(pool, pending, accepted, reason, now):
            self.core.check_soft_health(pool, now)
        if pool.health.state is PoolHealth.SUSPECT:
            self.core.silence.heard(pool, ANSWERS, f"a share answered after "
                                                   f"{now - pending.sent_at:.2f} s", now)

    def pool_event(self, conn: PoolConnection, event: ev.PoolEvent, now: float) -> None:
        """Anything else the connection reports; a protocol failure fails the pool."""
        if type(event) is ev.ProtocolFailure:
            self.fail(conn, event.reason, now)
        else:
            self._event(conn, event, now)

    def _event(self, conn: PoolConnection, event: object, now: float) -> None:
        core = self.core
        pool = conn.pool
        if type(event) is ev.JobReceived:
            core.jobs.add(conn, event.notify, now)
            if conn.state is ConnState.READY:
                fan_out_job(conn)  # first: the rigs wait on nothing else (the coinbase parse)
            n = event.notify
            pool.hashprice.job(n.coinb1, n.coinb2, len(conn.extranonce1) + conn.extranonce2_size,
                               n.nbits, now)
            if pool.health.state is PoolHealth.SUSPECT:
                core.silence.heard(pool, JOBS, "a new job arrived", now)
        elif type(event) is ev.BecameReady:
            self._ready(conn, now)
        elif type(event) is ev.DifficultySet:
            if conn.state is ConnState.READY:
                fan_out_difficulty(conn, core.vardiff, now)
        elif type(event) is ev.ExtranonceSet:
            self._extranonce(conn, event, now)
        elif type(event) is ev.VersionMaskSet:
            fan_out_version_mask(conn)
        elif type(event) is ev.LateAnswer:
            pool.counters.late_answers += 1
        elif type(event) is ev.ReconnectAsked:
            core.publish(PoolReconnectRequested(pool=pool.name, host=event.host, port=event.port), now)
            core.placement.retiring(conn)
            replacement = self.dial(pool, now, event.host, event.port)
            replacement.exclusive = conn.exclusive
            replacement.replaces = conn
            conn.replaced_by = replacement
            replacement.authorized_workers = set(conn.authorized_workers)
        elif type(event) is ev.PoolSaid:
            log.info("pool %s says: %s", pool.name, event.text)
            core.publish(PoolMessage(pool=pool.name, message=event.text), now)

    def _extranonce(self, conn: PoolConnection, event: ev.ExtranonceSet, now: float) -> None:
        core = self.core
        pool = conn.pool
        if event.by_pool:
            core.publish(PoolSetExtranonce(pool=pool.name, extranonce1=event.extranonce1.hex(),
                                           extranonce2_size=event.extranonce2_size), now)
        layout = core.layout
        if layout.learn(pool.name, event.extranonce2_size):
            core.publish(PoolExtranonce(pool=pool.name, extranonce2_size=event.extranonce2_size), now)
        if not layout.decided:
            if layout.complete(p.name for p in core.pools.values() if p.enabled):
                self.choose_layout(now, waited=False)
            return
        self.check_fold(conn, now)

    def choose_layout(self, now: float, waited: bool) -> None:
        """Fix the rigs' layout now that the pools are known (or the wait is over); the jobs
        already received are translated for it and the held subscribes answered."""
        core = self.core
        layout = core.layout
        layout.decide([p.name for p in core.pools.values() if p.enabled], waited)
        core.prefixes = PrefixAllocator(layout.prefix_size or 0, core.prefix_start)
        core.publish(LayoutChosen(prefix_size=layout.prefix_size or 0, extranonce2_size=core.e2_size,
                                  reason=layout.reason), now)
        for pool in core.pools.values():
            for conn in list(pool.connections.values()):
                if not conn.alive:
                    continue
                conn.exclusive = conn.exclusive or core.prefixes.size == 0
                if conn.subscribed:
                    self.check_fold(conn, now)
                if conn.current_job is not None:
                    core.jobs.add(conn, conn.current_job.notify, now)
                core.placement.changed(conn)
        core.reroute(now, "extranonce layout chosen", force=True)

    def check_fold(self, conn: PoolConnection, now: float) -> None:
        """Can rigs be folded onto this connection under the layout?  If not, the pool is
        narrow (an event, once) and the connection carries one rig with the pool's extranonce."""
        core = self.core
        pool = conn.pool
        need = core.prefixes.size + core.e2_size
        if conn.extranonce2_size >= need:
            if pool.narrow and not any(c.passthrough for c in pool.connections.values() if c is not conn):
                pool.narrow = ""
            conn.passthrough = False
            return
        if not pool.narrow:
            pool.narrow = (f"pool extranonce2_size {conn.extranonce2_size} < {need} (prefix "
                           f"{core.prefixes.size} + rigs' extranonce2_size {core.e2_size}): rigs "
                           "move here only by mining.set_extranonce (if they subscribed to it) "
                           "or client.reconnect, one upstream connection each")
            core.publish(PoolNarrow(pool=pool.name, reason=pool.narrow), now)
        conn.passthrough = True
        conn.exclusive = True
        # rigs folded onto this connection cannot stay: the first keeps it, the rest move
        for rig in list(conn.rigs.values())[1:]:
            core.placement.detach(rig)
        core.placement.changed(conn)

    def _ready(self, conn: PoolConnection, now: float) -> None:
        core = self.core
        pool = conn.pool
        pool.backoff = 0.0
        core.placement.changed(conn)
        old = conn.replaces
        if old is not None:
            conn.replaces = None
            old.replaced_by = None
            for rig in list(old.rigs.values()):
                core.place(rig, pool, now)
            self.close(old, "replaced after client.reconnect", now)
        moves = core.mover.hand_over_all(conn, now)
        if moves:
            # rigs that waited for this connection needed the pool's own extranonce
            core.publish(RigsExtranonceChanged(
                pool=pool.name, reason=pool.narrow or "back onto the proxy's extranonce layout",
                extranonce_changes=moves), now)
        if pool.enabled and pool.health.state is PoolHealth.DOWN:
            core.set_health(pool, PoolHealth.HEALTHY, "connected, subscribed, authorized, job received", now)
        core.reroute(now, f"{pool.name} is up")

    # ------------------------------------------------------------------ closing

    def closed(self, conn: PoolConnection, reason: str, now: float) -> None:
        """The transport closed or the dial failed (the glue's report)."""
        if conn.state is ConnState.CLOSED or conn.doomed:
            return  # a doomed one is accounted by its batch, with its pool's failure
        if conn.retiring:
            if self._lost(conn, reason, now, failure=False):
                self.core.reroute(now, f"{conn.pool.name}: {reason}", force=True)
            return
        self.fail(conn, reason, now, close_transport=False)

    def fail(self, conn: PoolConnection, reason: str, now: float, close_transport: bool = True) -> None:
        """The pool failed as a whole: DOWN, backoff, its other connections closed too
        (redialled fresh), and every rig it carried rerouted once."""
        if conn.state is ConnState.CLOSED:
            return
        core = self.core
        pool = conn.pool
        self._lost(conn, reason, now, failure=True)
        if close_transport:
            core.io.close_pool(conn)
        pool.last_error = reason
        settings = core.settings
        pool.backoff = min(max(pool.backoff * 2, settings.reconnect_min_s), settings.reconnect_max_s)
        pool.next_dial_at = now + pool.backoff
        core.timers.due(pool.next_dial_at)
        doomed = self.doomed
        why = f"pool failed: {reason}"  # one string and no object per connection: 10,000
        # allocations here ran a garbage collection inside this call
        for other in pool.connections.values():
            if other.alive and other.replaces is None and not other.doomed:
                other.doomed = why
                doomed.append(other)
        self.close_doomed(now)
        if pool.health.state is not PoolHealth.DOWN:
            core.set_health(pool, PoolHealth.DOWN, reason, now)
        core.reroute(now, f"{pool.name}: {reason}", force=True)

    def close_doomed(self, now: float) -> None:
        """Close the next CLOSE_BATCH connections of failed pools (a run of the core takes the
        rest: ``Timers.run``); the rigs they carried are in the reroute plan already, or
        rerouted when it is done."""
        doomed = self.doomed
        core = self.core
        for _ in range(min(CLOSE_BATCH, len(doomed))):
            conn = doomed.popleft()
            if conn.alive:
                self._lost(conn, conn.doomed, now, failure=False)
                core.io.close_pool(conn)
        if doomed:
            core.timers.due(now)

    def close(self, conn: PoolConnection, reason: str, now: float) -> None:
        """Close one connection on purpose (idle, replaced, removed); rigs it carried are
        rerouted."""
        if conn.state is ConnState.CLOSED:
            return
        orphans = self._lost(conn, reason, now, failure=False)
        self.core.io.close_pool(conn)
        if orphans:
            self.core.reroute(now, f"{conn.pool.name}: {reason}", force=True)

    def _lost(self, conn: PoolConnection, reason: str, now: float, failure: bool) -> int:
        """Account a connection that is gone; returns how many rigs are now on no connection."""
        core = self.core
        pool = conn.pool
        lost = conn.close()
        conn.close_reason = reason
        if lost:
            pool.counters.lost[reason if failure else f"closed: {reason}"] += lost
        core.jobs.retire(conn, now)
        orphans = core.placement.removed(conn)
        replacement = conn.replaced_by
        if replacement is not None and replacement.alive:
            replacement.replaces = None
            for rig in orphans:
                core.placement.attach(rig, replacement)
            return 0
        return len(orphans)

    def retire_idle(self, conn: PoolConnection, now: float, even_if_last: bool = False) -> None:
        """A connection with no rig left goes, if the pool keeps another one (or, for a
        rig's own connection, ``even_if_last``: the warm one is redialled by ``maintain``)."""
        if conn.alive and not conn.doomed and not conn.rigs and not conn.pending and (
                even_if_last or self.core.placement.spare(conn)):
            self.close(conn, "idle", now)
