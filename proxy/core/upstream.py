"""One TCP connection to a pool, as a protocol state machine: bytes in, typed events out.

The connection owns its side of Stratum: the handshake (configure, subscribe, authorize),
the requests in flight with their ids, and what the pool told it (extranonce, difficulty,
version mask).  It decides nothing about rigs or routing: it reports what happened as
events, one at a time, so the coordinator acts on each before the next line is read (a
notify must be stored before the connection turns ready; a failure stops the reading).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..stratum import errors, messages
from ..stratum.errors import StratumError, reason_from_error
from ..stratum.framing import LineFramer, LineTooLong
from ..stratum.messages import BadMessage, Message
from .pool_events import (
    BecameReady,
    DifficultySet,
    ExtranonceSet,
    JobReceived,
    LateAnswer,
    PoolEvent,
    PoolSaid,
    ProtocolFailure,
    ReconnectAsked,
    VersionMaskSet,
)

if TYPE_CHECKING:
    from .jobs import Job
    from .pool import PoolState
    from .rig import RigSession

log = logging.getLogger("proxy.core")

UPSTREAM_CONFIGURE_MASK = 0xFFFFFFFF
AGENT = f"stratum-proxy/{__version__}"


class ConnState(Enum):
    """A pool connection's lifecycle, DIALING -> HANDSHAKE -> READY, closed from any state; rigs
    get work only from a READY one."""

    DIALING = "dialing"  # the glue is connecting
    HANDSHAKE = "handshake"  # TCP up; configure/subscribe/authorize sent
    READY = "ready"  # subscribed, authorized, holding a job: can carry rigs
    CLOSED = "closed"


class RequestKind(Enum):
    """What a pending request to a pool was for, so its answer is handled right."""

    SHARE = "share"
    SUBSCRIBE = "subscribe"
    AUTHORIZE = "authorize"
    CONFIGURE = "configure"
    WORKER = "worker"  # a rig's own worker name, with forward_worker_names


@dataclass(slots=True)
class Pending:
    """An outstanding request to a pool; shares carry what accounting needs."""

    kind: RequestKind
    sent_at: float
    rig: RigSession | None = None
    difficulty: float = 0.0
    worker: str = ""


def _unconnected(data: bytes) -> None:
    raise RuntimeError("upstream connection is not connected")


def _unwatched(sent_at: float, conn: PoolConnection, msg_id: int) -> None:
    pass


class PoolSink(Protocol):
    """Where a connection delivers what happened (the pool side of the coordinator): a
    share's verdict straight to ``share_answered`` (the hot path), the rest as typed events."""

    def share_answered(self, conn: PoolConnection, pending: Pending, accepted: bool, reason: str,
                       now: float) -> None:
        """The pool's verdict on one forwarded share (the hot path)."""

    def pool_event(self, conn: PoolConnection, event: PoolEvent, now: float) -> None:
        """Anything else, before the connection reads its next line."""


class PoolConnection:
    """The protocol state of one pool connection (see the module docstring)."""

    __slots__ = (
        "conn_id", "pool", "host", "port", "state", "send", "framer", "extranonce1",
        "extranonce2_size", "difficulty", "version_mask", "jobs", "current_job", "rigs",
        "pending", "shares_in_flight", "next_id", "last_rx", "last_job_at", "subscribed",
        "authorized", "authorized_workers", "connected_at", "retiring", "replaces",
        "replaced_by", "exclusive", "close_reason", "passthrough", "last_keepalive", "watch",
        "retargets", "_difficulty_seen", "doomed",
    )

    def __init__(self, conn_id: int, pool: PoolState, host: str, port: int, max_line: int) -> None:
        self.conn_id = conn_id
        self.pool = pool
        self.host = host
        self.port = port
        self.state = ConnState.DIALING
        self.send: Callable[[bytes], None] = _unconnected
        self.framer = LineFramer(max_line)
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.version_mask: int | None = None
        self.jobs: dict[str, Job] = {}  # upstream job id + "#" + proxy job id, oldest first
        self.current_job: Job | None = None
        self.rigs: dict[bytes, RigSession] = {}  # prefix -> rig (kept by the placement)
        self.pending: dict[int, Pending] = {}  # in send order, so the oldest is first
        self.shares_in_flight = 0
        self.next_id = 1
        self.last_rx = 0.0
        self.last_job_at = 0.0
        self.subscribed = False
        self.authorized = False
        self.authorized_workers: set[str] = set()
        self.connected_at = 0.0
        self.retiring = False  # being replaced (client.reconnect); rigs move when the new one is ready
        self.replaces: PoolConnection | None = None
        self.replaced_by: PoolConnection | None = None
        self.exclusive = False  # one rig only (prefix size 0, or a pool too narrow for the fold)
        self.close_reason = ""
        # its pool failed (the reason, "" until then): it is closed by a later batch
        # (``Upstreams.close_doomed``) and the glue's report of its end changes nothing
        self.doomed = ""
        self.passthrough = False  # too narrow for the fold: the rig uses the pool's extranonce1
        self.last_keepalive = 0.0
        self.retargets = 0  # set_difficulty after the first: the pool's vardiff at work
        self._difficulty_seen = False
        # told of every request sent (time, connection, id): the core's silence detector
        self.watch: Callable[[float, PoolConnection, int], None] = _unwatched

    # ------------------------------------------------------------------ state

    @property
    def alive(self) -> bool:
        """True until the connection is closed (dialing and handshake count as alive)."""
        return self.state is not ConnState.CLOSED

    @property
    def ready(self) -> bool:
        """Can take rigs now (a retiring connection hands its rigs to its replacement)."""
        return self.state is ConnState.READY and not self.retiring

    def connected(self, send: Callable[[bytes], None], password: str, now: float) -> None:
        """TCP is up: send the whole handshake in one write (pools answer in any order)."""
        self.send = send
        self.state = ConnState.HANDSHAKE
        self.connected_at = self.last_rx = now
        user = self.pool.config.user
        out = [
            self._request(RequestKind.CONFIGURE, "mining.configure",
                          [["version-rolling"],
                           {"version-rolling.mask": f"{UPSTREAM_CONFIGURE_MASK:08x}",
                            "version-rolling.min-bit-count": 2}], now),
            self._request(RequestKind.SUBSCRIBE, "mining.subscribe", [AGENT], now),
            self._request(RequestKind.AUTHORIZE, "mining.authorize", [user, password], now),
        ]
        out.extend(self._worker_request(name, password, now) for name in self.authorized_workers)
        send(b"".join(out))

    def close(self) -> int:
        """Mark closed; returns the shares that were in flight (now lost)."""
        self.state = ConnState.CLOSED
        lost = self.shares_in_flight
        self.pending.clear()
        self.shares_in_flight = 0
        return lost

    # ------------------------------------------------------------------ requests out

    def _request(self, kind: RequestKind, method: str, params: list, now: float,
                 **extra: Any) -> bytes:
        msg_id = self.next_id
        self.next_id += 1
        self.pending[msg_id] = Pending(kind, now, **extra)
        self.watch(now, self, msg_id)
        return messages.request(msg_id, method, params)

    def _worker_request(self, name: str, password: str, now: float) -> bytes:
        return self._request(RequestKind.WORKER, "mining.authorize", [name, password], now, worker=name)

    def authorize_worker(self, name: str, password: str, now: float) -> None:
        """Authorize a rig's own worker name on this connection, once."""
        if name in self.authorized_workers or self.state is ConnState.CLOSED:
            return
        self.authorized_workers.add(name)
        if self.state is not ConnState.DIALING:
            self.send(self._worker_request(name, password, now))

    def submit(self, params: list, rig: RigSession, difficulty: float, now: float) -> None:
        """Forward a share; its answer comes back through ``PoolSink.share_answered``."""
        msg_id = self.next_id
        self.next_id += 1
        self.pending[msg_id] = Pending(RequestKind.SHARE, now, rig, difficulty)
        self.shares_in_flight += 1
        requests = self.pool.requests
        if requests:  # the silence watch's queue: its timer is armed by the first entry
            requests.append((now, self, msg_id))
        else:
            self.watch(now, self, msg_id)
        self.send(messages.request(msg_id, "mining.submit", params))

    def expire_shares(self) -> int:
        """Give up on every share in flight (the pool went silent); returns how many."""
        count = self.shares_in_flight
        if count:
            self.pending = {k: p for k, p in self.pending.items() if p.kind is not RequestKind.SHARE}
            self.shares_in_flight = 0
        return count

    # ------------------------------------------------------------------ bytes in

    def receive(self, data: bytes, now: float, sink: PoolSink) -> None:
        """Frame and decode ``data``; each happening goes to ``sink`` before the next line is
        read (a notify is stored before the connection turns ready; a failure stops it)."""
        self.last_rx = now
        try:
            lines = self.framer.feed(data)
        except LineTooLong:
            sink.pool_event(self, ProtocolFailure("pool sent an over-long line"), now)
            return
        for line in lines:
            if self.state is ConnState.CLOSED:
                return
            try:
                msg = messages.decode(line)
            except BadMessage as exc:
                sink.pool_event(self, ProtocolFailure(f"pool sent garbage: {str(exc)[:120]}"), now)
                return
            try:
                if msg.method is None:
                    self._response(msg, now, sink)
                else:
                    self._method(msg, now, sink)
            except StratumError as exc:
                sink.pool_event(self, ProtocolFailure(
                    f"pool sent a bad {msg.method or 'response'}: {exc.message}"), now)
                return

    def _response(self, msg: Message, now: float, sink: PoolSink) -> None:
        pending = self.pending.pop(msg.id, None) if isinstance(msg.id, int) else None
        if pending is None:
            sink.pool_event(self, LateAnswer(), now)
            return
        kind = pending.kind
        if kind is RequestKind.SHARE:  # the hot path: straight to the sink, no event object
            self.shares_in_flight -= 1
            accepted = msg.result is True and msg.error is None
            sink.share_answered(self, pending, accepted, "" if accepted else reason_from_error(msg.error),
                                now)
        elif kind is RequestKind.SUBSCRIBE:
            if msg.error is not None or msg.result is None:
                raise StratumError(errors.OTHER, f"subscribe refused: {msg.error}")
            result = messages.parse_subscribe_result(msg.result)
            self.extranonce1 = result.extranonce1
            self.extranonce2_size = result.extranonce2_size
            self.subscribed = True
            sink.pool_event(self, ExtranonceSet(result.extranonce1, result.extranonce2_size,
                                                by_pool=False), now)
            self._maybe_ready(now, sink)
        elif kind is RequestKind.AUTHORIZE:
            if msg.result is not True:
                raise StratumError(errors.UNAUTHORIZED, f"pool refused authorization of "
                                                        f"{self.pool.config.user!r}: {msg.error}")
            self.authorized = True
            self._maybe_ready(now, sink)
        elif kind is RequestKind.CONFIGURE:
            result = msg.result if isinstance(msg.result, dict) else {}
            if result.get("version-rolling") is True:
                self.version_mask = messages.parse_version_mask(
                    result.get("version-rolling.mask", "00000000"))
            else:
                self.version_mask = None
        elif kind is RequestKind.WORKER and msg.result is not True:
            log.warning("pool %s refused worker %s: %s", self.pool.name, pending.worker, msg.error)

    def _maybe_ready(self, now: float, sink: PoolSink) -> None:
        if (self.state is ConnState.HANDSHAKE and self.subscribed and self.authorized
                and self.current_job is not None):
            self.state = ConnState.READY
            sink.pool_event(self, BecameReady(), now)

    def _method(self, msg: Message, now: float, sink: PoolSink) -> None:
        method = msg.method
        if method == "mining.notify":
            if not self.subscribed:
                raise StratumError(errors.OTHER, "notify before subscribe")
            sink.pool_event(self, JobReceived(messages.parse_notify(msg.params)), now)
            # the sink stored the job (current_job) before this line
            self._maybe_ready(now, sink)
        elif method == "mining.set_difficulty":
            difficulty = messages.parse_difficulty(msg.params)
            if self._difficulty_seen:
                self.retargets += 1
            self._difficulty_seen = True
            if difficulty != self.difficulty:
                self.difficulty = difficulty
                sink.pool_event(self, DifficultySet(difficulty), now)
        elif method == "mining.set_extranonce":
            result = messages.parse_set_extranonce(msg.params)
            self.extranonce1 = result.extranonce1
            self.extranonce2_size = result.extranonce2_size
            sink.pool_event(self, ExtranonceSet(result.extranonce1, result.extranonce2_size,
                                                by_pool=True), now)
        elif method == "mining.set_version_mask":
            if not msg.params:
                raise StratumError(errors.INVALID_PARAMS, "set_version_mask without a mask")
            self.version_mask = messages.parse_version_mask(msg.params[0])
            sink.pool_event(self, VersionMaskSet(self.version_mask), now)
        elif method == "client.reconnect":
            sink.pool_event(self, self._reconnect_target(msg.params or []), now)
        elif method == "client.show_message":
            sink.pool_event(self, PoolSaid(str((msg.params or [""])[0])[:500]), now)
        elif method == "client.get_version":
            if msg.id is not None:
                self.send(messages.response(msg.id, AGENT))
        elif msg.id is not None:
            self.send(messages.error_response(msg.id, errors.METHOD_NOT_FOUND))

    def _reconnect_target(self, params: list) -> ReconnectAsked:
        host = params[0] if len(params) > 0 and isinstance(params[0], str) and params[0] else self.host
        port = self.port
        if len(params) > 1:
            try:
                port = int(params[1])
            except (TypeError, ValueError):
                port = self.port
        if not 0 < port < 65536:
            port = self.port
        return ReconnectAsked(host, port)

    def __repr__(self) -> str:
        return f"<PoolConnection {self.pool.name}#{self.conn_id} {self.state.value} rigs={len(self.rigs)}>"
