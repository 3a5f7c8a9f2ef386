"""The pool side of an ``EthCore``: dialing, handshakes, jobs, verdicts, failures.

Every enabled pool keeps one connection open (a warm backup), redialled with backoff;
more connections are dialled only when a pool holds more rigs than one connection has
prefixes for.  A share's verdict goes back to the rig that sent it, timed as the pool's
share-acceptance latency; a share whose connection dies first (or that the pool never
answers) is answered too, as an error, and counted lost or timed out: never left hanging.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..stratum import errors, messages
from .eth_rig import HASHES_PER_DIFFICULTY
from .eth_split import idle, wanted
from .eth_upstream import EthJobArrived, EthPending, EthPoolConnection
from .events import RigsExtranonceChanged
from .health import PoolHealth
from .pool_events import BecameReady, ExtranonceSet, LateAnswer, ProtocolFailure, ReconnectAsked
from .silence import ANSWERS, JOBS

if TYPE_CHECKING:
    from .eth_core import EthCore
    from .pool import PoolState

log = logging.getLogger("proxy.core.eth")


class EthUpstreams:
    """Pool connections of one GPU listener (the ``upstreams`` SilenceWatch fails)."""

    __slots__ = ("core", "_next_conn_id")

    def __init__(self, core: EthCore) -> None:
        self.core = core
        self._next_conn_id = 1

    # ------------------------------------------------------------------ dialing

    def dial(self, pool: PoolState, now: float) -> EthPoolConnection:
        """A new connection to ``pool``; the glue reports back through the core."""
        host, port = pool.endpoint
        conn = self.core.CONNECTION(self._next_conn_id, pool, host, port, self.core.settings.max_line_bytes)
        self._next_conn_id += 1
        conn.watch = self.core.silence.watch  # type: ignore[assignment]
        pool.connections[conn.conn_id] = conn
        self.core.io.dial(conn)
        return conn

    def maintain(self, now: float) -> None:
        """Every enabled pool keeps as many live connections as the farm needs (warm
        backups, see ``EthCore.connections_wanted``), redialled after backoff; a cold
        standby only while it is needed (``eth_split.wanted``), its idle connections closed."""
        count = self.core.connections_wanted()
        for pool in self.core.pools.values():
            if not wanted(self.core, pool):
                for conn in [c for c in pool.connections.values() if idle(c)]:
                    self._lost(conn, "closed: cold standby not needed", now)
                    self.core.io.close_pool(conn)
            elif pool.enabled and now >= pool.next_dial_at:
                for _ in range(count - len(pool.connections)):
                    self.dial(pool, now)

    def next_dial(self) -> float | None:
        """When the next redial is due."""
        count = self.core.connections_wanted()
        times = [p.next_dial_at for p in self.core.pools.values()
                 if p.enabled and len(p.connections) < count and wanted(self.core, p)]
        return min(times) if times else None

    def connected(self, conn: EthPoolConnection, send: Callable[[bytes], None], now: float) -> None:
        """TCP up: the handshake goes out."""
        if conn.alive:
            cfg = conn.pool.config
            conn.connected(send, now, cfg.user, cfg.password)

    def data(self, conn: EthPoolConnection, data: bytes, now: float) -> None:
        """Bytes from the pool; a failure fails the pool, not the process."""
        if not conn.alive:
            return
        try:
            conn.receive(data, now, self)
        except Exception as exc:
            log.exception("eth pool %s: error handling its data", conn.pool.name)
            self.fail(conn, f"internal error: {exc}", now)

    # ------------------------------------------------------------------ what the pool says

    def share_answered(self, conn: EthPoolConnection, pending: EthPending, accepted: bool, reason: str,
                       now: float) -> None:
        """The pool's verdict, timed, and passed on to the rig that found the share."""
        pool = conn.pool
        pool.latency.observe(now - pending.sent_at, now)
        pool.rejects.record(not accepted)
        pool.timeouts.record(False)
        counters = pool.counters
        core = self.core
        rig = pending.rig
        rig.in_flight -= 1
        if accepted:
            counters.accepted += 1
            counters.accepted_difficulty += pending.difficulty
            pool.split_work += pending.difficulty  # delivered since the active group formed
            rig.accepted += 1
            rig.hashrate.add(pending.difficulty * HASHES_PER_DIFFICULTY, now)  # H/s, as SV1 rigs
            core.totals["accepted"] += 1
            if not rig.closed:
                rig.send(messages.true_response(pending.rig_msg_id))
        else:
            counters.rejected[reason] += 1
            rig.rejected[reason] += 1
            core.totals["rejected"] += 1
            if not rig.closed:
                rig.reply_error(pending.rig_msg_id, errors.OTHER, f"rejected by pool: {reason}")
        core.silence.heard(pool, ANSWERS, f"answered after {(now - pending.sent_at) * 1000:.0f} ms", now)

    def pool_event(self, conn: EthPoolConnection, event: object, now: float) -> None:
        """Everything but verdicts, before the connection reads its next line."""
        core = self.core
        pool = conn.pool
        kind = type(event)
        if kind is EthJobArrived:
            job = core.jobs.add(event.notify, conn)  # type: ignore[attr-defined]
            conn.current_job = job
            conn.job_at = now
            if pool.last_job_at:
                pool.job_intervals.append(now - pool.last_job_at)
            pool.last_job_at = now
            core.silence.heard(pool, JOBS, "a new job", now)
            clean = job.notify.clean
            for rig in conn.rigs.values():
                rig.send_job(job, clean)
        elif kind is BecameReady:
            pool.backoff = 0.0
            core.connection_ready(conn, now)
            if pool.enabled and pool.health.state is PoolHealth.DOWN:
                core.set_health(pool, PoolHealth.HEALTHY,
                                "connected, subscribed, authorized, job received", now)
            core.reroute(now, f"{pool.name} is up")
        elif kind is ExtranonceSet and event.by_pool:  # type: ignore[attr-defined]
            self._pool_extranonce(conn, now)
        elif kind is ReconnectAsked:
            self.close(conn, "the pool asked to reconnect", now)
            self.maintain(now)
        elif kind is ProtocolFailure:
            self.fail(conn, event.reason, now)  # type: ignore[attr-defined]
        elif kind is LateAnswer:
            pool.counters.late_answers += 1

    def _pool_extranonce(self, conn: EthPoolConnection, now: float) -> None:
        """The pool changed this connection's extranonce: its jobs so far are void, and every
        rig on it takes the new one (or reconnects)."""
        for job in conn.jobs:
            job.stale = True
        conn.jobs.clear()
        conn.current_job = None
        moves: Counter[str] = Counter()
        for rig in list(conn.rigs.values()):
            self.core.detach(rig)
            self.core.attach(rig, conn, moves)
        if moves:
            self.core.publish(RigsExtranonceChanged(
                pool=conn.pool.name, reason="the pool sent mining.set_extranonce",
                extranonce_changes=dict(moves)), now)

    # ------------------------------------------------------------------ health

    def check_health(self, now: float) -> None:
        """Degrade a pool that rejects, times out or is slow; end a degradation window."""
        core = self.core
        for pool in list(core.pools.values()):
            if not core.end_degradation(pool, now):
                core.check_soft_health(pool, now)

    def check_stale(self, now: float) -> float | None:
        """Fail a pool whose ready connection sent no new job for ``max_job_age_s``; returns
        when the next one could go stale."""
        max_age = self.core.settings.max_job_age_s
        soonest: float | None = None
        for pool in list(self.core.pools.values()):
            for conn in list(pool.connections.values()):
                if not conn.ready:
                    continue
                if now - conn.job_at > max_age:
                    self.fail(conn, f"stale: no new job for {max_age:g}s", now)
                    break
                due = conn.job_at + max_age
                soonest = due if soonest is None else min(soonest, due)
        return soonest

    # ------------------------------------------------------------------ closing

    def closed(self, conn: EthPoolConnection, reason: str, now: float) -> None:
        """The glue's report: a reset, a refused dial, a TLS failure: the pool failed."""
        if conn.alive:
            self.fail(conn, reason, now, close_transport=False)

    def fail(self, conn: EthPoolConnection, reason: str, now: float, close_transport: bool = True) -> None:
        """The pool failed as a whole: DOWN, backoff, its connections closed, rigs rerouted."""
        if not conn.alive:
            return
        core = self.core
        pool = conn.pool
        self._lost(conn, reason, now)
        if close_transport:
            core.io.close_pool(conn)
        for other in list(pool.connections.values()):
            self._lost(other, f"pool failed: {reason}", now)
            core.io.close_pool(other)
        pool.last_error = reason
        s = core.settings
        pool.backoff = min(max(pool.backoff * 2, s.reconnect_min_s), s.reconnect_max_s)
        pool.next_dial_at = now + pool.backoff
        core.due(pool.next_dial_at)
        if pool.health.state is not PoolHealth.DOWN:
            core.set_health(pool, PoolHealth.DOWN, reason, now)
        core.reroute(now, f"{pool.name}: {reason}", force=True)
        self.maintain(now)  # a cold standby that is needed now is dialled at once

    def close(self, conn: EthPoolConnection, reason: str, now: float) -> None:
        """Close one connection on purpose; its rigs are rerouted."""
        if not conn.alive:
            return
        self._lost(conn, f"closed: {reason}", now)
        self.core.io.close_pool(conn)
        self.core.reroute(now, f"{conn.pool.name}: {reason}", force=True)

    def _lost(self, conn: EthPoolConnection, reason: str, now: float) -> None:
        """Account a connection that is gone: its shares in flight answered and counted lost,
        its jobs void, its rigs on no connection (the reroute places them)."""
        core = self.core
        pool = conn.pool
        lost = conn.close()
        conn.close_reason = reason
        pool.connections.pop(conn.conn_id, None)
        if lost:
            pool.counters.lost[reason] += len(lost)
            core.totals["lost"] += len(lost)
            answer(lost, f"share lost: pool connection gone ({reason})")
        for job in conn.jobs:
            job.stale = True
        for rig in list(conn.rigs.values()):
            core.detach(rig)
        for rig in list(core.waiting.values()):
            if rig.pool is pool and not any(c.alive for c in pool.connections.values()):
                del core.waiting[rig.rig_id]

    def shutdown(self, now: float) -> None:
        """Close everything; shares still in flight are counted lost."""
        for pool in self.core.pools.values():
            for conn in list(pool.connections.values()):
                self._lost(conn, "proxy shutting down", now)
                self.core.io.close_pool(conn)


def answer(lost: list[EthPending], reason: str) -> None:
    """Answer every rig whose share will get no verdict (a rig never waits forever)."""
    for pending in lost:
        rig = pending.rig
        rig.in_flight -= 1
        if not rig.closed:
            rig.reply_error(pending.rig_msg_id, errors.OTHER, reason)
