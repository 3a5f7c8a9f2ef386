"""The proxy engine: follows every message from a rig's socket to a pool's socket and back.

Sans-I/O: the glue feeds bytes and events in (with ``now`` from its clock), the engine
writes through ``send`` callables and asks the glue to dial or close pool connections
through ``CoreIO``.  All decisions (placement, failover, accounting) happen here.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, Protocol

from .. import __version__
from ..config import Config, PoolConfig
from ..stratum import errors, messages
from ..stratum.errors import StratumError, reason_from_error
from ..stratum.framing import LineTooLong
from ..stratum.messages import BadMessage, Message
from .downstream import RECENT_CONNS, RigSession
from .events import EventLog
from .extranonce import PrefixAllocator
from .jobs import Job
from .rigstats import RigTotals
from .router import Router
from .stats import HASHES_PER_DIFF1
from .upstream import (
    CLOSED,
    DEGRADED,
    DISABLED,
    DOWN,
    HANDSHAKE,
    HEALTHY,
    JOBS_KEPT,
    READY,
    Pending,
    PoolState,
    UpstreamConnection,
)

log = logging.getLogger("proxy.core")

DEAD_JOB_GRACE_S = 30.0
# lost[] reason of a share owed to a pool whose connection was gone before it could be written
LOST_UNSENT = "not sent: pool connection closed"
RATE_BURST = 4.0  # seconds' worth of requests a rig may send at once
RATE_LIMIT_CLOSE_AFTER = 1000  # requests dropped for flooding before the rig is closed
RATE_LIMITED_ERROR = messages.error_response(None, errors.OTHER, "rate limited: too many requests")
_LOW64 = (1 << 64) - 1
DEFAULT_VERSION_MASK = 0x1FFFE000  # BIP320 general-purpose bits
UPSTREAM_CONFIGURE_MASK = 0xFFFFFFFF


class CoreIO(Protocol):
    """What the engine asks of the I/O shell."""

    def dial(self, conn: UpstreamConnection) -> None:
        """Open a connection to conn.host:conn.port; report via pool_connected/pool_closed."""

    def close_pool(self, conn: UpstreamConnection) -> None:
        """Close the transport; the engine has already accounted for the connection."""


class ProxyCore:
    def __init__(self, config: Config, io: CoreIO, now: float, wall_offset: float = 0.0,
                 prefix_start: int = 0, events: EventLog | None = None) -> None:
        self.config = config
        self.settings = config.proxy
        self.io = io
        self.wall_offset = wall_offset
        self.started_at = now
        self.e2_size = self.settings.extranonce2_size
        self.prefixes = PrefixAllocator(self.settings.extranonce_prefix_size, prefix_start)
        self.router = Router(self.settings.failback_hold_s)
        self.events = events if events is not None else EventLog()
        self.pools: dict[str, PoolState] = {}
        self.rigs: dict[int, RigSession] = {}
        self.jobs: dict[str, Job] = {}
        self._next_rig_id = 1
        self._next_conn_id = 1
        self._next_job = 1
        self._active_names: tuple[str, ...] = ()
        self._next_hold_check: float | None = None
        self._last_keepalive_scan = now
        self._next_split_at = now
        self._layout_moves: Counter = Counter()
        self._per_address: dict[str, int] = {}
        self._auth_deadlines: deque[tuple[float, RigSession]] = deque()
        self._expiring_jobs: deque[tuple[float, list[str]]] = deque()
        self.rig_totals = RigTotals()  # hashrate sums for large farms, built by tick()
        self.totals: dict[str, int] = {
            "submits": 0, "accepted": 0, "rejected": 0, "forwarded": 0, "below_pool_target": 0,
            "rigs_connected_total": 0, "rigs_disconnected": 0, "bad_lines": 0,
            "pool_switches": 0, "split_moves": 0, "rigs_refused": 0, "rigs_timed_out": 0,
            "rate_limited": 0,
        }
        for i, pool_cfg in enumerate(config.pools):
            self.pools[pool_cfg.name] = PoolState(pool_cfg, i, self.settings.health_window_s)
        self._maintain_pools(now)

    # ------------------------------------------------------------------ helpers

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    def _event(self, kind: str, now: float, **fields: Any) -> None:
        self.events.emit(kind, self.wall(now), **fields)

    def active_pools(self) -> list[str]:
        return list(self._active_names)

    # ------------------------------------------------------------------ rig side

    def rig_connected(self, peer: str, send: Callable[[bytes], None], close: Callable[[], None],
                      now: float) -> RigSession:
        rig = RigSession(self._next_rig_id, peer, send, close, self.settings.max_line_bytes, now)
        self._next_rig_id += 1
        self.rigs[rig.rig_id] = rig
        self.totals["rigs_connected_total"] += 1
        s = self.settings
        rig.tokens = s.max_requests_per_s * RATE_BURST
        per_address = self._per_address.get(rig.address, 0) + 1
        self._per_address[rig.address] = per_address
        if len(self.rigs) > s.max_rigs:
            self.totals["rigs_refused"] += 1
            self.close_rig(rig, f"over the limit of {s.max_rigs} rigs", now)
        elif s.max_rigs_per_address and per_address > s.max_rigs_per_address:
            self.totals["rigs_refused"] += 1
            self.close_rig(rig, f"over {s.max_rigs_per_address} connections from {rig.address}", now)
        else:
            self._auth_deadlines.append((now + s.auth_timeout_s, rig))
        return rig

    def rig_closed(self, rig: RigSession, now: float) -> None:
        """The rig's transport is gone (or we closed it): release everything it held."""
        if rig.closed:
            return
        rig.closed = True
        self.totals["rigs_disconnected"] += 1
        self.rigs.pop(rig.rig_id, None)
        left = self._per_address.get(rig.address, 1) - 1
        if left > 0:
            self._per_address[rig.address] = left
        else:
            self._per_address.pop(rig.address, None)
        conn = rig.conn
        if conn is not None:
            self._detach(rig)
            if conn.exclusive or (not conn.rigs and self._spare(conn)):
                self._retire_idle(conn, now)
        if rig.subscribed:
            self.prefixes.release(rig.prefix)

    def close_all_rigs(self, reason: str, now: float) -> None:
        for rig in list(self.rigs.values()):
            self.close_rig(rig, reason, now)

    def close_rig(self, rig: RigSession, reason: str, now: float) -> None:
        log.info("closing rig %s (%s): %s", rig.rig_id, rig.peer, reason)
        try:
            rig.close()
        finally:
            self.rig_closed(rig, now)

    def rig_data(self, rig: RigSession, data: bytes, now: float) -> None:
        if rig.closed:
            return
        try:
            lines = rig.framer.feed(data)
        except LineTooLong as exc:
            self.totals["bad_lines"] += 1
            self.close_rig(rig, str(exc), now)
            return
        if lines:
            s = self.settings
            rig.tokens = min(s.max_requests_per_s * RATE_BURST,
                             rig.tokens + (now - rig.tokens_at) * s.max_requests_per_s)
            rig.tokens_at = now
        for line in lines:
            if rig.closed:
                return
            if rig.tokens < 1.0:
                # a flood costs the flooder only: refuse, and close a rig that keeps on
                rig.rate_limited += 1
                self.totals["rate_limited"] += 1
                if rig.rate_limited > RATE_LIMIT_CLOSE_AFTER:
                    self.close_rig(rig, "request flood", now)
                    return
                if rig.rate_limited % 100 == 1:  # say why, without decoding what we refuse
                    rig.send(RATE_LIMITED_ERROR)
                continue
            rig.tokens -= 1.0
            try:
                msg = messages.decode(line)
            except BadMessage as exc:
                self.totals["bad_lines"] += 1
                if exc.msg_id is None:
                    self.close_rig(rig, f"garbage: {exc}", now)
                    return
                rig.send(messages.error_response(exc.msg_id, errors.PARSE_ERROR, str(exc)[:200]))
                continue
            try:
                self._rig_request(rig, msg, now)
            except StratumError as exc:
                if msg.method == "mining.submit":
                    rig.rejected[exc.code] += 1
                    self.totals["rejected"] += 1
                if msg.id is not None:
                    rig.send(messages.error_response(msg.id, exc.code, exc.message))
            except Exception:  # a bug must cost one answer, never the process
                log.exception("error handling %r from rig %s", msg.method, rig.rig_id)
                if msg.method == "mining.submit":
                    # answered as a reject, so counted as one: submits = accepted + rejected
                    rig.rejected[errors.OTHER] += 1
                    self.totals["rejected"] += 1
                if msg.id is not None:
                    rig.send(messages.error_response(msg.id, errors.OTHER, "internal error"))

    def _rig_request(self, rig: RigSession, msg: Message, now: float) -> None:
        method = msg.method
        if method == "mining.submit":
            self._on_submit(rig, msg, now)
        elif method == "mining.subscribe":
            self._on_subscribe(rig, msg, now)
        elif method == "mining.authorize":
            self._on_authorize(rig, msg, now)
        elif method == "mining.configure":
            self._on_configure(rig, msg)
        elif method == "mining.extranonce.subscribe":
            rig.extranonce_subscribed = True
            self._reply(rig, msg, True)
        elif method in ("mining.suggest_difficulty", "mining.suggest_target"):
            if method == "mining.suggest_difficulty" and msg.params:
                try:
                    rig.suggested_difficulty = messages.parse_difficulty(msg.params)
                except StratumError:
                    raise StratumError(errors.INVALID_PARAMS,
                                       "difficulty must be a positive number") from None
            self._reply(rig, msg, True)
        elif method is None:
            pass  # a response from the rig (e.g. to client.get_version): nothing to do
        elif method == "client.get_version":
            self._reply(rig, msg, f"stratum-proxy/{__version__}")
        else:
            raise StratumError(errors.METHOD_NOT_FOUND, f"unknown method {method[:64]!r}")

    @staticmethod
    def _reply(rig: RigSession, msg: Message, result: Any) -> None:
        if msg.id is not None:
            rig.send(messages.response(msg.id, result))

    def _on_subscribe(self, rig: RigSession, msg: Message, now: float) -> None:
        if not rig.subscribed:
            if msg.params and isinstance(msg.params[0], str):
                rig.user_agent = msg.params[0][:128]
            rig.prefix = self.prefixes.allocate()
            rig.extranonce1 = rig.prefix
            rig.extranonce2_size = self.e2_size
            rig.subscribed = True
            target = self.router.pick(self._group())
            if target is not None and target.narrow:
                # The farm is on a pool too narrow for the fold: this rig gets its own
                # connection and that pool's extranonce, so hold the answer until it is known.
                rig.pending_subscribe = msg.id
                self._move(rig, target, now)
                if rig.conn is not None and rig.conn.subscribed:
                    self._answer_subscribe(rig, rig.conn)
                return
        self._answer_subscribe(rig, None, msg.id)
        if rig.authorized and rig.conn is None:
            self._place_new_rig(rig, now)

    def _answer_subscribe(self, rig: RigSession, conn: UpstreamConnection | None,
                          msg_id: Any = None) -> None:
        if conn is not None:
            msg_id = rig.pending_subscribe
            rig.pending_subscribe = None
            rig.extranonce1 = conn.extranonce1
            rig.extranonce2_size = conn.extranonce2_size
        sid = f"{rig.rig_id:08x}"
        rig.send(messages.response(msg_id, [[["mining.set_difficulty", sid], ["mining.notify", sid]],
                                            rig.extranonce1.hex(), rig.extranonce2_size]))

    def _on_authorize(self, rig: RigSession, msg: Message, now: float) -> None:
        params = msg.params or []
        if not params or not isinstance(params[0], str) or not params[0] or len(params[0]) > 256:
            raise StratumError(errors.UNAUTHORIZED, "worker name must be a non-empty string")
        worker = params[0]
        allowed = self.settings.allowed_workers
        if allowed and not any(fnmatchcase(worker, pattern) for pattern in allowed):
            raise StratumError(errors.UNAUTHORIZED, f"worker {worker[:64]!r} is not allowed here")
        first = not rig.authorized
        if worker not in rig.workers:
            rig.workers.append(worker)
        self._reply(rig, msg, True)
        if first and rig.subscribed and rig.conn is None and rig.pending_subscribe is None:
            self._place_new_rig(rig, now)

    def _on_configure(self, rig: RigSession, msg: Message) -> None:
        params = msg.params or []
        if len(params) < 1 or not isinstance(params[0], list):
            raise StratumError(errors.INVALID_PARAMS, "mining.configure takes [extensions, options]")
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        result: dict[str, Any] = {}
        for ext in params[0]:
            if ext == "version-rolling":
                raw = options.get("version-rolling.mask", "ffffffff")
                try:
                    requested = messages.parse_version_mask(raw)
                except StratumError:
                    raise StratumError(errors.INVALID_PARAMS,
                                       "version-rolling.mask must be 8 hex digits") from None
                rig.requested_mask = requested
                rig.version_mask = requested & self._pool_mask_for(rig)
                result["version-rolling"] = True
                result["version-rolling.mask"] = f"{rig.version_mask:08x}"
            elif isinstance(ext, str):
                result[ext[:64]] = False
        self._reply(rig, msg, result)

    def _pool_mask_for(self, rig: RigSession) -> int:
        conn = rig.conn
        if conn is None:
            group = [self.pools[n] for n in self._active_names if n in self.pools]
            for pool in group:
                for c in pool.ready_connections():
                    conn = c
                    break
                if conn:
                    break
        if conn is not None and conn.version_mask is not None:
            return conn.version_mask
        if conn is not None and conn.subscribed:
            return 0
        return DEFAULT_VERSION_MASK

    def _on_submit(self, rig: RigSession, msg: Message, now: float) -> None:
        self.totals["submits"] += 1
        if not rig.subscribed:
            raise StratumError(errors.NOT_SUBSCRIBED)
        sub = messages.parse_submit(msg.params)
        if sub.worker not in rig.workers:
            raise StratumError(errors.UNAUTHORIZED)
        job = self.jobs.get(sub.job_id)
        if job is None or not rig.may_submit_to(job.conn):
            raise StratumError(errors.JOB_NOT_FOUND)
        if job.stale:
            raise StratumError(errors.JOB_NOT_FOUND)
        if len(sub.extranonce2) != job.extranonce2_size:
            raise StratumError(errors.OTHER, f"extranonce2 must be {job.extranonce2_size} bytes")
        if not job.ntime <= sub.ntime <= job.ntime + self.settings.ntime_window_s:
            raise StratumError(errors.OTHER, "ntime out of range")
        version = job.version
        bits = sub.version_bits
        if bits is not None:
            if bits & ~rig.version_mask & (job.version ^ bits):
                raise StratumError(errors.OTHER, "version bits outside the negotiated mask")
            version = (job.version & ~rig.version_mask & 0xFFFFFFFF) | (bits & rig.version_mask)
        ext1 = rig.prefix if job.rig_extranonce1 is None else job.rig_extranonce1
        digest = job.header_hash(ext1, sub.extranonce2, sub.ntime, sub.nonce, version)
        value = int.from_bytes(digest, "little")
        rig_target = job.target
        conn = job.conn
        if rig.difficulty is not None and rig.difficulty != job.difficulty:
            # set_difficulty between jobs applies to work the rig makes afterwards
            rig_target = max(rig_target, conn.target_cache(rig.difficulty))
        if value > rig_target:
            raise StratumError(errors.LOW_DIFFICULTY)
        key = value & _LOW64  # low bits: random even for hashes that meet a high difficulty
        if key in job.seen:
            raise StratumError(errors.DUPLICATE)
        job.seen.add(key)
        # forward first: the pool gets the share one write sooner, the rig in the same callback
        if value <= conn.target_cache(conn.difficulty) or value <= job.target:
            self._forward(rig, job, msg, sub.version_bits is not None, now)
        else:
            self.totals["below_pool_target"] += 1
        rig.send(messages.true_response(msg.id))
        rig.accepted += 1
        rig.last_share_at = now
        difficulty = job.difficulty
        rig.accepted_difficulty += difficulty
        rig.hashrate.add(difficulty * HASHES_PER_DIFF1, now)
        self.totals["accepted"] += 1
        conn.pool.split_work += difficulty

    def _forward(self, rig: RigSession, job: Job, msg: Message, rolled: bool, now: float) -> None:
        conn = job.conn
        pool = conn.pool
        counters = pool.counters
        # Counted as forwarded even when the connection is already gone: "forwarded" is every
        # share the proxy owed this pool, and each one ends as exactly one of accepted,
        # rejected[reason], timeouts or lost[reason] (or is still in flight).  Counting a
        # share lost without counting it forwarded broke that identity whenever a rig's share
        # for the old pool's job arrived just after a failover.
        counters.forwarded += 1
        self.totals["forwarded"] += 1
        if conn.state != READY or conn.send is None:
            counters.lost[LOST_UNSENT] += 1
            return
        params = msg.params
        assert params is not None
        pool_e2 = (job.padding.hex() + rig.prefix.hex() + params[2] if job.rig_extranonce1 is None
                   else params[2])
        user = self._upstream_user(conn, rig)
        out = [user, job.upstream_job_id, pool_e2, params[3], params[4]]
        if rolled and conn.version_mask is not None:
            out.append(params[5])
        msg_id = conn.take_id()
        conn.pending[msg_id] = Pending("share", now, rig, job.difficulty)
        conn.send(messages.request(msg_id, "mining.submit", out))

    def _upstream_user(self, conn: UpstreamConnection, rig: RigSession) -> str:
        if not self.settings.forward_worker_names:
            return conn.pool.config.user
        return rig.upstream_worker or conn.pool.config.user

    # ------------------------------------------------------------------ placement

    def _place_new_rig(self, rig: RigSession, now: float) -> None:
        if rig.leaving:
            return
        pool = self.router.pick(self._group())
        if pool is not None:
            self._move(rig, pool, now)

    def _group(self) -> list[PoolState]:
        return [self.pools[n] for n in self._active_names if n in self.pools]

    def _detach(self, rig: RigSession) -> None:
        conn = rig.conn
        if conn is None:
            return
        if conn.rigs.get(rig.prefix) is rig:
            del conn.rigs[rig.prefix]
        rig.conn = None
        if conn.alive:
            recent = rig.recent_conns
            if conn in recent:
                recent.remove(conn)
            recent.insert(0, conn)
            del recent[RECENT_CONNS:]

    def _move(self, rig: RigSession, pool: PoolState, now: float) -> None:
        """Put the rig on a connection of ``pool``; it sees only difficulty/mask/notify."""
        old = rig.conn
        conn = self._connection_for(pool, rig, now)
        if old is conn:
            return
        self._detach(rig)
        conn.rigs[rig.prefix] = rig
        rig.conn = conn
        rig.pool = pool
        if self.settings.forward_worker_names:
            self._ensure_worker(conn, rig, now)
        if conn.ready and conn.current_job is not None:
            self._send_work(rig, conn, now)
        if old is not None and old.alive and not old.rigs and self._spare(old):
            self._retire_idle(old, now)

    def _connection_for(self, pool: PoolState, rig: RigSession, now: float) -> UpstreamConnection:
        best: UpstreamConnection | None = None
        for conn in pool.connections:
            if not conn.alive or conn.retiring or rig.prefix in conn.rigs:
                continue
            if (conn.passthrough or conn.exclusive) and conn.rigs:
                continue
            if conn.state == READY:
                return conn
            if best is None:
                best = conn
        if best is not None:
            return best
        return self._dial(pool, now)

    def _spare(self, conn: UpstreamConnection) -> bool:
        """True when the pool keeps another live connection, so this idle one can go."""
        return any(c is not conn and c.alive and not c.retiring for c in conn.pool.connections)

    def _retire_idle(self, conn: UpstreamConnection, now: float) -> None:
        if conn.rigs or conn.pending:
            return
        self._close_conn(conn, "idle", now)

    def _send_work(self, rig: RigSession, conn: UpstreamConnection, now: float) -> None:
        job = conn.current_job
        assert job is not None
        if rig.pending_subscribe is not None:
            self._answer_subscribe(rig, conn)
        want = ((conn.extranonce1, conn.extranonce2_size) if conn.passthrough
                else (rig.prefix, self.e2_size))
        if (rig.extranonce1, rig.extranonce2_size) != want:
            if rig.extranonce_subscribed:
                rig.extranonce1, rig.extranonce2_size = want
                rig.send(messages.notification("mining.set_extranonce", [want[0].hex(), want[1]]))
                self._layout_moves["set_extranonce"] += 1
            else:
                # last resort: the rig reconnects (to us) and is subscribed with the new layout
                self._layout_moves["client.reconnect"] += 1
                rig.leaving = True
                rig.send(messages.notification("client.reconnect", []))
                self._detach(rig)
                return
        if rig.difficulty != conn.difficulty:
            rig.send(conn.difficulty_line())
            rig.difficulty = conn.difficulty
        if rig.requested_mask is not None:
            mask = rig.requested_mask & (conn.version_mask or 0)
            if mask != rig.version_mask:
                rig.version_mask = mask
                rig.send(messages.notification("mining.set_version_mask", [f"{mask:08x}"]))
        rig.send(job.line_clean)
        rig.last_sent_job = job
        rig.last_work_at = now

    def _ensure_worker(self, conn: UpstreamConnection, rig: RigSession, now: float) -> None:
        suffix = rig.worker.rsplit(".", 1)[-1] if rig.worker else f"rig{rig.rig_id}"
        name = f"{conn.pool.config.user}.{suffix}"
        rig.upstream_worker = name
        if name in conn.authorized_workers or conn.state == CLOSED or conn.send is None:
            return
        conn.authorized_workers.add(name)
        if conn.state in (HANDSHAKE, READY):
            msg_id = conn.take_id()
            conn.pending[msg_id] = Pending("worker", now, worker=name)
            conn.send(messages.request(msg_id, "mining.authorize", [name, conn.pool.config.password]))

    # ------------------------------------------------------------------ pool side

    def _dial(self, pool: PoolState, now: float) -> UpstreamConnection:
        host, port = pool.config.endpoint
        conn = UpstreamConnection(self._next_conn_id, pool, host, port,
                                  self.settings.max_line_bytes)
        self._next_conn_id += 1
        conn.exclusive = self.prefixes.size == 0 or bool(pool.narrow)
        pool.connections.append(conn)
        self.io.dial(conn)
        return conn

    def pool_connected(self, conn: UpstreamConnection, send: Callable[[bytes], None],
                       now: float) -> None:
        if conn.state == CLOSED:
            return
        conn.send = send
        conn.state = HANDSHAKE
        conn.connected_at = now
        conn.last_rx = now
        cfg = conn.pool.config
        out = [
            self._request(conn, "configure", "mining.configure",
                          [["version-rolling"],
                           {"version-rolling.mask": f"{UPSTREAM_CONFIGURE_MASK:08x}",
                            "version-rolling.min-bit-count": 2}], now),
            self._request(conn, "subscribe", "mining.subscribe", [f"stratum-proxy/{__version__}"],
                          now),
            self._request(conn, "authorize", "mining.authorize", [cfg.user, cfg.password], now),
        ]
        for name in conn.authorized_workers:
            msg_id = conn.take_id()
            conn.pending[msg_id] = Pending("worker", now, worker=name)
            out.append(messages.request(msg_id, "mining.authorize", [name, cfg.password]))
        send(b"".join(out))

    @staticmethod
    def _request(conn: UpstreamConnection, kind: str, method: str, params: list, now: float) -> bytes:
        msg_id = conn.take_id()
        conn.pending[msg_id] = Pending(kind, now)
        return messages.request(msg_id, method, params)

    def pool_data(self, conn: UpstreamConnection, data: bytes, now: float) -> None:
        if conn.state == CLOSED:
            return
        conn.last_rx = now
        try:
            lines = conn.framer.feed(data)
        except LineTooLong:
            self._pool_failed(conn, "pool sent an over-long line", now)
            return
        for line in lines:
            if conn.state == CLOSED:
                return
            try:
                msg = messages.decode(line)
            except BadMessage as exc:
                self._pool_failed(conn, f"pool sent garbage: {str(exc)[:120]}", now)
                return
            try:
                if msg.method is None:
                    self._pool_response(conn, msg, now)
                else:
                    self._pool_method(conn, msg, now)
            except StratumError as exc:
                self._pool_failed(conn, f"pool sent a bad {msg.method or 'response'}: {exc.message}",
                                  now)
                return
            except Exception:
                log.exception("error handling pool %s message %r", conn.pool.name, msg.method)
                self._pool_failed(conn, "internal error on a pool message", now)
                return

    def _pool_response(self, conn: UpstreamConnection, msg: Message, now: float) -> None:
        pending = conn.pending.pop(msg.id, None) if isinstance(msg.id, int) else None
        pool = conn.pool
        if pending is None:
            pool.counters.late_answers += 1
            return
        kind = pending.kind
        if kind == "share":
            self._share_answer(conn, pending, msg, now)
        elif kind == "subscribe":
            if msg.error is not None or msg.result is None:
                raise StratumError(errors.OTHER, f"subscribe refused: {msg.error}")
            result = messages.parse_subscribe_result(msg.result)
            self._set_extranonce(conn, result.extranonce1, result.extranonce2_size, now)
            conn.subscribed = True
            self._check_ready(conn, now)
        elif kind == "authorize":
            if msg.result is not True:
                raise StratumError(errors.UNAUTHORIZED,
                                   f"pool refused authorization of {pool.config.user!r}: {msg.error}")
            conn.authorized = True
            self._check_ready(conn, now)
        elif kind == "configure":
            result = msg.result if isinstance(msg.result, dict) else {}
            if result.get("version-rolling") is True:
                conn.version_mask = messages.parse_version_mask(
                    result.get("version-rolling.mask", "00000000"))
            else:
                conn.version_mask = None
        elif kind == "worker" and msg.result is not True:
            log.warning("pool %s refused worker %s: %s", pool.name, pending.worker, msg.error)

    def _share_answer(self, conn: UpstreamConnection, pending: Pending, msg: Message,
                      now: float) -> None:
        pool = conn.pool
        counters = pool.counters
        pool.latency.observe(now - pending.sent_at, now)
        pool.timeouts.record(False)
        if msg.result is True and msg.error is None:
            counters.accepted += 1
            counters.accepted_difficulty += pending.difficulty
            pool.rejects.record(False)
            return
        counters.rejected[reason_from_error(msg.error)] += 1
        pool.rejects.record(True)
        self._check_soft_health(pool, now)

    def _pool_method(self, conn: UpstreamConnection, msg: Message, now: float) -> None:
        method = msg.method
        if method == "mining.notify":
            self._on_notify(conn, messages.parse_notify(msg.params), now)
        elif method == "mining.set_difficulty":
            difficulty = messages.parse_difficulty(msg.params)
            if difficulty != conn.difficulty:
                conn.difficulty = difficulty
                if conn.state == READY:
                    line = conn.difficulty_line()
                    for rig in conn.rigs.values():
                        if rig.difficulty != difficulty:
                            rig.difficulty = difficulty
                            rig.send(line)
        elif method == "mining.set_extranonce":
            result = messages.parse_set_extranonce(msg.params)
            self._set_extranonce(conn, result.extranonce1, result.extranonce2_size, now)
            self._event("pool_set_extranonce", now, pool=conn.pool.name,
                        extranonce1=result.extranonce1.hex(),
                        extranonce2_size=result.extranonce2_size)
        elif method == "mining.set_version_mask":
            if not msg.params:
                raise StratumError(errors.INVALID_PARAMS, "set_version_mask without a mask")
            conn.version_mask = messages.parse_version_mask(msg.params[0])
            for rig in conn.rigs.values():
                if rig.requested_mask is not None:
                    mask = rig.requested_mask & conn.version_mask
                    if mask != rig.version_mask:
                        rig.version_mask = mask
                        rig.send(messages.notification("mining.set_version_mask", [f"{mask:08x}"]))
        elif method == "client.reconnect":
            self._on_pool_reconnect(conn, msg.params or [], now)
        elif method == "client.show_message":
            text = str((msg.params or [""])[0])[:500]
            log.info("pool %s says: %s", conn.pool.name, text)
            self._event("pool_message", now, pool=conn.pool.name, message=text)
        elif method == "client.get_version":
            if msg.id is not None:
                conn.send(messages.response(msg.id, f"stratum-proxy/{__version__}"))
        elif msg.id is not None:
            conn.send(messages.error_response(msg.id, errors.METHOD_NOT_FOUND))

    def _set_extranonce(self, conn: UpstreamConnection, ext1: bytes, e2_size: int,
                        now: float) -> None:
        conn.extranonce1 = ext1
        conn.extranonce2_size = e2_size
        pool = conn.pool
        need = self.prefixes.size + self.e2_size
        if e2_size < need:
            if not pool.narrow:
                pool.narrow = (f"pool extranonce2_size {e2_size} < {need} (prefix "
                               f"{self.prefixes.size} + rigs' extranonce2_size {self.e2_size}): "
                               "rigs move here only by mining.set_extranonce (if they subscribed "
                               "to it) or client.reconnect, one upstream connection each")
                self._event("pool_narrow", now, pool=pool.name, reason=pool.narrow)
            conn.passthrough = True
            conn.exclusive = True
            # rigs folded onto this connection cannot stay: they get their own
            for rig in list(conn.rigs.values())[1:]:
                self._detach(rig)
        else:
            if pool.narrow and not any(c.passthrough for c in pool.connections if c is not conn):
                pool.narrow = ""
            conn.passthrough = False

    def _on_notify(self, conn: UpstreamConnection, notify: messages.Notify, now: float) -> None:
        if not conn.subscribed:
            raise StratumError(errors.OTHER, "notify before subscribe")
        job_id = f"{self._next_job:x}"
        self._next_job += 1
        if conn.passthrough:
            job = Job(job_id, conn, notify, b"", conn.difficulty, now,
                      rig_extranonce1=conn.extranonce1, extranonce2_size=conn.extranonce2_size)
        else:
            room = conn.extranonce2_size - self.e2_size - self.prefixes.size
            job = Job(job_id, conn, notify, bytes(room), conn.difficulty, now,
                      extranonce2_size=self.e2_size)
        if notify.clean_jobs:
            for old in conn.jobs.values():
                old.stale = True
        conn.jobs[notify.job_id + "#" + job_id] = job
        self.jobs[job_id] = job
        while len(conn.jobs) > JOBS_KEPT:
            oldest_key = next(iter(conn.jobs))
            old = conn.jobs.pop(oldest_key)
            self.jobs.pop(old.job_id, None)
        conn.current_job = job
        conn.last_job_at = now
        conn.pool.last_job_at = now
        if conn.state == READY:
            line = job.line
            for rig in conn.rigs.values():
                rig.send(line)
        else:
            self._check_ready(conn, now)

    def _check_ready(self, conn: UpstreamConnection, now: float) -> None:
        if conn.state != HANDSHAKE or not (conn.subscribed and conn.authorized
                                           and conn.current_job is not None):
            return
        conn.state = READY
        pool = conn.pool
        pool.backoff = 0.0
        if conn.replaces is not None:
            old = conn.replaces
            conn.replaces = None
            for rig in list(old.rigs.values()):
                self._move(rig, pool, now)
            self._close_conn(old, "replaced after client.reconnect", now)
        self._layout_moves.clear()
        for rig in list(conn.rigs.values()):
            self._send_work(rig, conn, now)
        if self._layout_moves:
            # rigs that waited for this connection needed the pool's own extranonce
            self._event("rigs_extranonce_changed", now, pool=pool.name,
                        reason=pool.narrow or "back onto the proxy's extranonce layout",
                        extranonce_changes=dict(self._layout_moves))
            self._layout_moves.clear()
        if pool.health != HEALTHY and pool.enabled:
            previous = pool.health
            pool.health = HEALTHY
            pool.health_reason = "connected, subscribed, authorized, job received"
            pool.healthy_since = now
            self._event("pool_up", now, pool=pool.name, previous=previous,
                        reason=pool.health_reason)
        self._reroute(now, f"{pool.name} is up")

    def _on_pool_reconnect(self, conn: UpstreamConnection, params: list, now: float) -> None:
        host = params[0] if len(params) > 0 and isinstance(params[0], str) and params[0] else conn.host
        port = conn.port
        if len(params) > 1:
            try:
                port = int(params[1])
            except (TypeError, ValueError):
                port = conn.port
        if not 0 < port < 65536:
            port = conn.port
        pool = conn.pool
        self._event("pool_reconnect_requested", now, pool=pool.name, host=host, port=port)
        conn.retiring = True
        replacement = UpstreamConnection(self._next_conn_id, pool, host, port,
                                         self.settings.max_line_bytes)
        self._next_conn_id += 1
        replacement.exclusive = conn.exclusive
        replacement.replaces = conn
        replacement.authorized_workers = set(conn.authorized_workers)
        pool.connections.append(replacement)
        self.io.dial(replacement)

    def pool_closed(self, conn: UpstreamConnection, reason: str, now: float) -> None:
        """The transport closed or the dial failed (the glue's report)."""
        if conn.state == CLOSED:
            return
        self._connection_lost(conn, reason, now, failure=not conn.retiring)

    def _pool_failed(self, conn: UpstreamConnection, reason: str, now: float) -> None:
        if conn.state == CLOSED:
            return
        self._connection_lost(conn, reason, now, failure=True)
        self.io.close_pool(conn)

    def _close_conn(self, conn: UpstreamConnection, reason: str, now: float) -> None:
        if conn.state == CLOSED:
            return
        self._connection_lost(conn, reason, now, failure=False)
        self.io.close_pool(conn)

    def _connection_lost(self, conn: UpstreamConnection, reason: str, now: float,
                         failure: bool) -> None:
        conn.state = CLOSED
        conn.close_reason = reason
        pool = conn.pool
        if conn in pool.connections:
            pool.connections.remove(conn)
        lost = 0
        for pending in conn.pending.values():
            if pending.kind == "share":
                lost += 1
        if lost:
            pool.counters.lost[reason if failure else f"closed: {reason}"] += lost
        conn.pending.clear()
        # In-flight shares for this connection's jobs are still answered to the rigs (and
        # counted as lost with the reason) for a grace period, never rejected as stale.
        self._expiring_jobs.append((now + DEAD_JOB_GRACE_S, [j.job_id for j in conn.jobs.values()]))
        orphans = list(conn.rigs.values())
        conn.rigs.clear()
        for rig in orphans:
            rig.conn = None
            rig.last_work_at = now
            recent = rig.recent_conns
            recent.insert(0, conn)
            del recent[RECENT_CONNS:]
        replacement = next((c for c in pool.connections if c.replaces is conn), None)
        if replacement is not None:
            replacement.replaces = None
            for rig in orphans:
                if rig.conn is None:
                    replacement.rigs[rig.prefix] = rig
                    rig.conn = replacement
            orphans = []
        if failure:
            pool.last_error = reason
            pool.ever_failed = True
            pool.backoff = min(max(pool.backoff * 2, self.settings.reconnect_min_s),
                               self.settings.reconnect_max_s)
            pool.next_dial_at = now + pool.backoff
            if pool.health != DOWN:
                self._set_health(pool, DOWN, reason, now)
            # the pool failed as a whole: its other connections go too (redialled fresh)
            for other in list(pool.connections):
                if other.state != CLOSED and other.replaces is None:
                    self._close_conn(other, f"pool failed: {reason}", now)
        if orphans or failure:
            self._reroute(now, f"{pool.name}: {reason}", force=True)

    def _set_health(self, pool: PoolState, health: str, reason: str, now: float) -> None:
        previous = pool.health
        pool.health = health
        pool.health_reason = reason
        if health == HEALTHY:
            pool.healthy_since = now
        else:
            pool.healthy_since = None
            pool.ever_failed = True
        self._event("pool_health", now, pool=pool.name, previous=previous, state=health,
                    reason=reason)

    def _check_soft_health(self, pool: PoolState, now: float) -> None:
        s = self.settings
        if pool.health != HEALTHY:
            return
        if pool.rejects.samples >= s.min_answers_for_health and pool.rejects.ratio > s.max_reject_ratio:
            self._degrade(pool, f"rejecting {pool.rejects.ratio:.0%} of shares "
                                f"(limit {s.max_reject_ratio:.0%})", now)
        elif (pool.timeouts.samples >= s.min_answers_for_health
              and pool.timeouts.ratio > s.max_timeout_ratio):
            self._degrade(pool, f"{pool.timeouts.ratio:.0%} of shares timed out "
                                f"(limit {s.max_timeout_ratio:.0%})", now)

    def _degrade(self, pool: PoolState, reason: str, now: float) -> None:
        self._set_health(pool, DEGRADED, reason, now)
        pool.extra["degraded_at"] = now
        self._reroute(now, f"{pool.name}: {reason}", force=True)

    # ------------------------------------------------------------------ routing

    def _reroute(self, now: float, reason: str, force: bool = False) -> None:
        """Recompute the active group; move rigs if it changed (or if forced)."""
        group = self.router.active_group(self.pools.values(), now)
        names = tuple(p.name for p in group)
        self._next_hold_check = self.router.hold_expires_at(self.pools.values(), now)
        orphans = any(r.conn is None and r.authorized and r.subscribed and not r.leaving
                      for r in self.rigs.values()) \
            if group else False
        if names == self._active_names and not force and not orphans:
            return
        previous = self._active_names
        self._active_names = names
        if names != previous:
            for pool in self.pools.values():
                pool.split_work = 0.0
        if not group:
            if previous:
                self._event("pool_switch", now, from_pools=list(previous), to_pools=[],
                            reason=reason, rigs_moved=0,
                            note="no usable pool: rigs keep their connections and last job")
                self.totals["pool_switches"] += 1
            return
        rigs = [r for r in self.rigs.values() if r.subscribed and r.authorized and not r.leaving]
        self._layout_moves.clear()
        plan = self.router.plan(rigs, group)
        for rig_id, pool in plan.items():
            rig = self.rigs.get(rig_id)
            if rig is not None:
                self._move(rig, pool, now)
        if names != previous:
            self.totals["pool_switches"] += 1
            self._event("pool_switch", now, from_pools=list(previous), to_pools=list(names),
                        reason=reason if previous else "startup: first pool ready",
                        rigs_moved=len(plan), **({"extranonce_changes": dict(self._layout_moves)}
                                                  if self._layout_moves else {}))
        self._maintain_pools(now)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        s = self.settings
        for pool in list(self.pools.values()):
            for conn in list(pool.connections):
                if conn.state == CLOSED:
                    continue
                if conn.pending:
                    oldest = conn.oldest_pending()
                    if oldest is not None and now - oldest > s.silent_timeout_s:
                        shares = sum(1 for p in conn.pending.values() if p.kind == "share")
                        # counted once, as timeouts (not again as lost when the connection goes)
                        conn.pending = {k: p for k, p in conn.pending.items() if p.kind != "share"}
                        pool.counters.timeouts += shares
                        for _ in range(min(shares, 100)):
                            pool.timeouts.record(True)
                        self._pool_failed(conn, f"silent: no answer for {s.silent_timeout_s:g}s", now)
                        continue
                if conn.state == READY and now - conn.last_job_at > s.max_job_age_s:
                    self._pool_failed(conn, f"stale: no new job for {s.max_job_age_s:g}s", now)
                    continue
            if pool.health == DEGRADED:
                since = pool.extra.get("degraded_at", now)
                if now - since >= s.health_window_s:
                    pool.rejects.clear()
                    pool.timeouts.clear()
                    self._set_health(pool, HEALTHY, "degradation window over: on probation", now)
                    self._reroute(now, f"{pool.name} recovered")
            elif s.latency_slo_ms > 0 and pool.health == HEALTHY and pool.rig_count():
                window = pool.latency.window(now)
                if window.count >= s.min_answers_for_health:
                    p99 = window.quantile(0.99) or 0.0
                    if p99 * 1000 > s.latency_slo_ms:
                        self._degrade(pool, f"p99 share latency {p99 * 1000:.0f} ms over the "
                                            f"{s.latency_slo_ms:g} ms SLO", now)
        while self._auth_deadlines and self._auth_deadlines[0][0] <= now:
            rig = self._auth_deadlines.popleft()[1]
            if not rig.closed and not (rig.subscribed and rig.authorized):
                self.totals["rigs_timed_out"] += 1
                self.close_rig(rig, f"not subscribed and authorized within {s.auth_timeout_s:g}s", now)
        while self._expiring_jobs and self._expiring_jobs[0][0] <= now:
            for job_id in self._expiring_jobs.popleft()[1]:
                self.jobs.pop(job_id, None)
        if len(self._active_names) > 1 and now >= self._next_split_at:
            self._next_split_at = now + s.split_slice_s
            self._steer_split(now)
        if self._next_hold_check is not None and now >= self._next_hold_check:
            self._next_hold_check = None  # _reroute sets the next one
            self._reroute(now, "failback: hold-down over")
        self._maintain_pools(now)
        if now - self._last_keepalive_scan >= 1.0:
            self._last_keepalive_scan = now
            self._keepalive(now)
        self.rig_totals.advance(self.rigs.values(), len(self.rigs), now)

    def _steer_split(self, now: float) -> None:
        """Weighted split: move as few rigs as needed so delivered work tracks the weights."""
        group = self._group()
        rigs = [r for r in self.rigs.values() if r.conn is not None and r.pool in group]
        moves = self.router.steer(rigs, group, now, self.settings.split_slice_s)
        for rig, pool in moves:
            self._move(rig, pool, now)
        if moves:
            self.totals["split_moves"] = self.totals.get("split_moves", 0) + len(moves)

    def _pool_wanted(self, pool: PoolState) -> bool:
        if not pool.enabled:
            return False
        if pool.config.standby == "hot":
            return True
        better = [p for p in self.pools.values() if p.usable and p.priority < pool.priority]
        return not better or pool.rig_count() > 0

    def _maintain_pools(self, now: float) -> None:
        """Keep one warm connection per hot pool (and cold pools when needed); redial with backoff."""
        for pool in self.pools.values():
            live = [c for c in pool.connections if c.alive]
            if self._pool_wanted(pool):
                if not live and now >= pool.next_dial_at:
                    self._dial(pool, now)
            else:
                for conn in live:
                    if not conn.rigs and not conn.pending:
                        self._close_conn(conn, "cold standby not needed", now)

    def _keepalive(self, now: float) -> None:
        """Never let a rig hear nothing for long: firmware drops a silent pool after ~90 s."""
        interval = self.settings.keepalive_s
        for pool in self.pools.values():
            for conn in pool.connections:
                if (conn.state == READY and conn.current_job is not None and conn.rigs
                        and now - max(conn.last_job_at, conn.extra_keepalive) >= interval):
                    conn.extra_keepalive = now
                    line = conn.current_job.line_keepalive
                    for rig in conn.rigs.values():
                        rig.send(line)
        # rigs without a connection (their pool is gone): a scan of every rig, once a second,
        # only when some rig is not attached (with 50,000 rigs the scan is ~10 ms of loop time)
        attached = sum(len(conn.rigs) for pool in self.pools.values() for conn in pool.connections
                       if conn.state == READY)
        if attached >= len(self.rigs):
            return
        for rig in self.rigs.values():
            if rig.conn is None and rig.last_sent_job is not None \
                    and now - rig.last_work_at >= interval:
                rig.last_work_at = now
                rig.send(rig.last_sent_job.line_keepalive)

    # ------------------------------------------------------------------ control

    def set_pool(self, name: str, now: float, *, priority: int | None = None,
                 weight: float | None = None, enabled: bool | None = None) -> PoolState:
        pool = self.pools[name]
        changes = {}
        cfg = pool.config
        if priority is not None and priority != cfg.priority:
            changes["priority"] = (cfg.priority, priority)
            cfg.priority = priority
        if weight is not None and weight != cfg.weight:
            changes["weight"] = (cfg.weight, weight)
            cfg.weight = weight
        if enabled is not None and enabled != cfg.enabled:
            changes["enabled"] = (cfg.enabled, enabled)
            cfg.enabled = enabled
            if enabled:
                pool.draining = False
                if pool.has_ready:
                    self._set_health(pool, HEALTHY, "enabled by operator", now)
                else:
                    pool.health = DOWN
                    pool.health_reason = "enabled; connecting"
            else:
                self._set_health(pool, DISABLED, "disabled by operator", now)
        if changes:
            self._event("pool_changed", now, pool=name,
                        changes={k: {"from": a, "to": b} for k, (a, b) in changes.items()})
            self._maintain_pools(now)
            self._reroute(now, f"operator changed {name}: "
                               + ", ".join(f"{k} {a}->{b}" for k, (a, b) in changes.items()),
                          force="weight" in changes)
        return pool

    def drain(self, name: str, now: float) -> PoolState:
        pool = self.pools[name]
        pool.draining = True
        self._event("pool_drain", now, pool=name, rigs=pool.rig_count())
        self._reroute(now, f"operator drained {name}", force=True)
        return pool

    def undrain(self, name: str, now: float) -> PoolState:
        pool = self.pools[name]
        pool.draining = False
        self._reroute(now, f"operator undrained {name}", force=True)
        return pool

    def apply_config(self, config: Config, now: float) -> dict[str, list[str]]:
        """Live reload: add, update and remove pools; rigs move, none disconnect."""
        old_names = set(self.pools)
        new_by_name = {p.name: p for p in config.pools}
        added = [n for n in new_by_name if n not in old_names]
        removed = [n for n in old_names if n not in new_by_name]
        updated: list[str] = []
        for i, pool_cfg in enumerate(config.pools):
            if pool_cfg.name in self.pools:
                pool = self.pools[pool_cfg.name]
                old_cfg = pool.config
                pool.order = i
                if _pool_identity(old_cfg) != _pool_identity(pool_cfg):
                    pool.config = pool_cfg
                    for conn in list(pool.connections):
                        self._close_conn(conn, "pool address or credentials changed", now)
                    pool.health = DOWN
                    pool.health_reason = "reconnecting with the new settings"
                    updated.append(pool_cfg.name)
                elif old_cfg != pool_cfg:
                    pool.config = pool_cfg
                    if not pool_cfg.enabled and pool.health != DISABLED:
                        self._set_health(pool, DISABLED, "disabled in config", now)
                    elif pool_cfg.enabled and pool.health == DISABLED:
                        pool.health = DOWN
                    updated.append(pool_cfg.name)
            else:
                self.pools[pool_cfg.name] = PoolState(pool_cfg, i, self.settings.health_window_s)
        for name in removed:
            pool = self.pools[name]
            pool.draining = True
        self.config.pools = config.pools
        self._reroute(now, "config reloaded", force=True)
        for name in removed:
            pool = self.pools.pop(name)
            for conn in list(pool.connections):
                self._close_conn(conn, "pool removed from config", now)
        self._maintain_pools(now)
        self._event("config_reloaded", now, added=added, removed=removed, updated=updated)
        return {"added": added, "removed": removed, "updated": updated}

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, now: float) -> None:
        for pool in self.pools.values():
            for conn in list(pool.connections):
                self._close_conn(conn, "proxy shutting down", now)


def _pool_identity(cfg: PoolConfig) -> tuple:
    return (cfg.url, cfg.user, cfg.password, cfg.ca_file, cfg.tls_verify)
