"""One TCP connection to an EthereumStratum/1.0.0 pool, as a protocol state machine.

It owns its side of the protocol: the handshake (subscribe, extranonce.subscribe,
authorize), the shares in flight with their ids, and what the pool told it (extranonce,
difficulty, jobs).  It decides nothing about rigs or routing: it reports to its sink with
the typed pool events the SV1 connection uses (``pool_events``), one at a time.

Its interface towards the reused machinery (``PoolState``, ``Router``, ``SilenceWatch``,
``net.client.Dialer``) is the SV1 connection's: ``conn_id``, ``pool``, ``host``, ``port``,
``alive``, ``ready``, ``rigs``, ``pending``, ``shares_in_flight``, ``expire_shares``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from ..stratum import errors, ethstratum, messages
from ..stratum.errors import StratumError, reason_from_error
from ..stratum.framing import LineFramer, LineTooLong
from ..stratum.messages import BadMessage, Message
from .pool_events import (
    BecameReady,
    DifficultySet,
    ExtranonceSet,
    LateAnswer,
    PoolEvent,
    ProtocolFailure,
    ReconnectAsked,
)
from .upstream import AGENT

if TYPE_CHECKING:
    from .eth_jobs import EthJob
    from .eth_rig import EthRigSession
    from .pool import PoolState

log = logging.getLogger("proxy.core.eth")

SUBSCRIBE_ID, EXTRANONCE_ID, AUTHORIZE_ID = 1, 2, 3
FIRST_SHARE_ID = 10


class EthConnState(Enum):
    """DIALING -> HANDSHAKE -> READY, closed from any state; rigs get work only from READY."""

    DIALING = "dialing"
    HANDSHAKE = "handshake"  # TCP up; subscribe/extranonce.subscribe/authorize sent
    READY = "ready"  # subscribed, authorized, holding a job
    CLOSED = "closed"


@dataclass(slots=True)
class EthPending:
    """A share forwarded to the pool, waiting on its verdict (which goes back to the rig)."""

    sent_at: float
    rig: EthRigSession
    rig_msg_id: Any
    difficulty: float


@dataclass(slots=True)
class EthJobArrived:
    """The pool sent mining.notify (parsed): the core stores it and fans it out."""

    notify: ethstratum.EthNotify


class EthPoolSink(Protocol):
    """Where the connection reports: verdicts on the hot path, the rest as events."""

    def share_answered(self, conn: EthPoolConnection, pending: EthPending, accepted: bool,
                       reason: str, now: float) -> None:
        """The pool's verdict on one forwarded share."""

    def pool_event(self, conn: EthPoolConnection, event: PoolEvent | EthJobArrived, now: float) -> None:
        """Anything else, before the next line is read."""


def _unconnected(data: bytes) -> None:
    raise RuntimeError("upstream connection is not connected")


class EthPoolConnection:
    """The protocol state of one EthereumStratum pool connection."""

    __slots__ = ("conn_id", "pool", "host", "port", "state", "send", "framer", "extranonce",
                 "difficulty", "jobs", "current_job", "rigs", "prefixes", "pending",
                 "next_id", "subscribed", "authorized", "connected_at", "last_rx", "watch",
                 "close_reason", "job_at")

    def __init__(self, conn_id: int, pool: PoolState, host: str, port: int, max_line: int) -> None:
        self.conn_id = conn_id
        self.pool = pool
        self.host = host
        self.port = port
        self.state = EthConnState.DIALING
        self.send: Callable[[bytes], None] = _unconnected
        self.framer = LineFramer(max_line)
        self.extranonce = b""
        self.difficulty = 1.0
        self.jobs: list[EthJob] = []  # this connection's live jobs, oldest first
        self.current_job: EthJob | None = None
        self.rigs: dict[int, EthRigSession] = {}
        self.prefixes: dict[bytes, int] = {}  # prefix -> rig id: unique per connection
        self.pending: dict[int, EthPending] = {}
        self.next_id = FIRST_SHARE_ID
        self.subscribed = False
        self.authorized = False
        self.connected_at = 0.0
        self.last_rx = 0.0
        self.watch: Callable[[float, EthPoolConnection, int], None] = lambda *a: None
        self.close_reason = ""
        self.job_at = 0.0  # when its latest job arrived (a pool that stops sending them is stale)

    @property
    def alive(self) -> bool:
        """Not closed (dialing, handshaking or ready)."""
        return self.state is not EthConnState.CLOSED

    @property
    def ready(self) -> bool:
        """Can carry rigs now."""
        return self.state is EthConnState.READY

    @property
    def shares_in_flight(self) -> int:
        """Shares forwarded here and not yet answered."""
        return len(self.pending)

    def takes(self, prefix: bytes) -> bool:
        """True when a rig with this prefix can join (no other rig here holds it)."""
        return prefix not in self.prefixes

    # ------------------------------------------------------------------ handshake and sends

    def connected(self, send: Callable[[bytes], None], now: float, user: str, password: str) -> None:
        """TCP is up: send the handshake, pipelined as GPU miners do."""
        self.send = send
        self.state = EthConnState.HANDSHAKE
        self.connected_at = self.last_rx = now
        send(ethstratum.subscribe_request(SUBSCRIBE_ID, AGENT)
             + messages.request(EXTRANONCE_ID, "mining.extranonce.subscribe", [])
             + messages.request(AUTHORIZE_ID, "mining.authorize", [user, password]))

    def submit(self, rig: EthRigSession, rig_msg_id: Any, job: EthJob, nonce: bytes, worker: str,
               now: float) -> None:
        """Forward a share; its verdict comes back through the sink's ``share_answered``."""
        msg_id = self.next_id
        self.next_id += 1
        self.pending[msg_id] = EthPending(now, rig, rig_msg_id, job.difficulty)
        self.send(ethstratum.submit_request(msg_id, worker, job.notify.job_id, nonce))
        self.watch(now, self, msg_id)

    def close(self) -> list[EthPending]:
        """Mark closed; returns the shares that will never get a verdict."""
        self.state = EthConnState.CLOSED
        lost = list(self.pending.values())
        self.pending.clear()
        return lost

    def expire_shares(self) -> int:
        """The pool went silent (``SilenceWatch``): the shares in flight are given up, each
        rig answered with the reason; returns how many (counted as timeouts by the caller)."""
        lost = list(self.pending.values())
        self.pending.clear()
        for pending in lost:
            rig = pending.rig
            rig.in_flight -= 1
            if not rig.closed:
                rig.reply_error(pending.rig_msg_id, errors.OTHER, "share timed out: the pool did not answer")
        return len(lost)

    # ------------------------------------------------------------------ bytes in

    def receive(self, data: bytes, now: float, sink: EthPoolSink) -> None:
        """Frame and decode; every happening goes to ``sink`` before the next line."""
        try:
            lines = self.framer.feed(data)
        except LineTooLong as exc:
            sink.pool_event(self, ProtocolFailure(f"protocol error: {exc}"), now)
            return
        self.last_rx = now
        for line in lines:
            if not self.alive:
                return
            try:
                msg = messages.decode(line)
                self._handle(msg, now, sink)
            except (BadMessage, StratumError) as exc:
                sink.pool_event(self, ProtocolFailure(f"protocol error: {exc}"), now)
                return

    def _handle(self, msg: Message, now: float, sink: EthPoolSink) -> None:
        method = msg.method
        if method is None:
            self._answer(msg, now, sink)
        elif method == "mining.notify":
            sink.pool_event(self, EthJobArrived(ethstratum.parse_notify(msg.params)), now)
            self._maybe_ready(now, sink)
        elif method == "mining.set_difficulty":
            difficulty = messages.parse_difficulty(msg.params)
            if difficulty != self.difficulty:
                self.difficulty = difficulty
                sink.pool_event(self, DifficultySet(difficulty), now)
        elif method == "mining.set_extranonce":
            extranonce = ethstratum.parse_extranonce((msg.params or [None])[0])
            if extranonce != self.extranonce:
                self.extranonce = extranonce
                sink.pool_event(self, ExtranonceSet(extranonce, 0, by_pool=True), now)
        elif method == "client.reconnect":
            sink.pool_event(self, ReconnectAsked(self.host, self.port), now)
        elif msg.id is not None:  # a request we do not serve: answer, keep going
            self.send(messages.error_response(msg.id, errors.METHOD_NOT_FOUND, "unknown method"))

    def _answer(self, msg: Message, now: float, sink: EthPoolSink) -> None:
        msg_id = msg.id
        pending = self.pending.pop(msg_id, None) if isinstance(msg_id, int) else None
        if pending is not None:
            accepted = msg.result is True and msg.error is None
            reason = "" if accepted else reason_from_error(msg.error)
            sink.share_answered(self, pending, accepted, reason, now)
        elif msg_id == SUBSCRIBE_ID and not self.subscribed:
            if msg.error is not None:
                raise StratumError(errors.OTHER, f"subscribe refused: {reason_from_error(msg.error)}")
            self.extranonce = ethstratum.parse_subscribe_result(msg.result)
            self.subscribed = True
            sink.pool_event(self, ExtranonceSet(self.extranonce, 0, by_pool=False), now)
        elif msg_id == AUTHORIZE_ID and not self.authorized:
            if msg.result is not True:
                raise StratumError(errors.UNAUTHORIZED,
                                   f"authorize refused: {reason_from_error(msg.error) or msg.result}")
            self.authorized = True
            self._maybe_ready(now, sink)
        elif msg_id == EXTRANONCE_ID:
            pass  # a pool that does not know extranonce.subscribe may refuse it: harmless
        else:
            sink.pool_event(self, LateAnswer(), now)

    def _maybe_ready(self, now: float, sink: EthPoolSink) -> None:
        if (self.state is EthConnState.HANDSHAKE and self.subscribed and self.authorized
                and self.current_job is not None):
            self.state = EthConnState.READY
            sink.pool_event(self, BecameReady(), now)

    def __repr__(self) -> str:
        return f"<EthConn {self.conn_id} {self.pool.name} {self.state.value} rigs={len(self.rigs)}>"
