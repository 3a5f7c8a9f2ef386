"""What a rig session does the same whatever its protocol (SV1's ``RigSession``, the GPU
rigs' ``EthRigSession``): its lifecycle moves, its name, where it may still submit, plain
answers, and authorize (the worker allow-list)."""

from __future__ import annotations

from enum import Enum
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

from ..stratum import errors, messages
from ..stratum.errors import StratumError
from ..stratum.framing import LineFramer, LineTooLong
from ..stratum.messages import BadMessage
from .rig_requests import AuthorizeRequest, BadLine, RateLimited, RigRequest, ShareSink, Violation

RATE_BURST = 4.0  # seconds' worth of requests a rig may send at once
RATE_LIMIT_CLOSE_AFTER = 1000  # requests dropped for flooding before the rig is closed
RATE_LIMITED_ERROR = messages.error_response(None, errors.OTHER, "rate limited: too many requests")

RECENT_CONNS = 3  # connections a rig may still submit old jobs to after it moved


class RigState(Enum):
    """A rig's lifecycle (SV1 and GPU sessions alike), forward only and only through
    ``RigBase.to``; each comment says when a rig is in that state."""

    HANDSHAKE = "handshake"  # until both subscribed (answered) and authorized
    ACTIVE = "active"  # mining, or waiting on keepalive work for a pool to come back
    LEAVING = "leaving"  # sent client.reconnect: waiting for it to come back fresh
    CLOSED = "closed"


NEXT_STATES = {
    RigState.HANDSHAKE: {RigState.ACTIVE, RigState.LEAVING, RigState.CLOSED},
    RigState.ACTIVE: {RigState.LEAVING, RigState.CLOSED},
    RigState.LEAVING: {RigState.CLOSED},
    RigState.CLOSED: set(),
}

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..stratum.messages import Message


class RigBase:
    """Shared methods; each subclass has the slots they read (``rig_id``, ``state``,
    ``workers``, ``pool``, ``conn``, ``recent_conns``, ``policy``, ``send``); both walk the
    one lifecycle ``RigState`` / ``NEXT_STATES``."""

    __slots__ = ()
    NEXT_STATES: ClassVar[dict[RigState, set[RigState]]] = NEXT_STATES
    CLOSED_STATE: ClassVar[RigState] = RigState.CLOSED
    rig_id: int
    state: Enum
    workers: list[str]
    pool: Any
    conn: Any
    recent_conns: list[Any]
    policy: Any
    send: Callable[[bytes], None]
    framer: LineFramer
    tokens: float
    tokens_at: float
    rate_limited: int

    def to(self, state: Any) -> None:
        """The one place the lifecycle moves, forward only; an impossible move is a bug, said loudly."""
        if state is not self.state:
            if state not in self.NEXT_STATES[self.state]:
                raise RuntimeError(f"rig {self.rig_id}: {self.state.value} -> {state.value}")
            self.state = state

    @property
    def worker(self) -> str:
        """The first authorized worker name ("" before authorize): the name the rig is shown by."""
        return self.workers[0] if self.workers else ""

    @property
    def pool_name(self) -> str | None:
        """The pool the rig mines on now; None while it is on no connection."""
        return self.pool.name if self.pool is not None and self.conn is not None else None

    def may_submit_to(self, conn: Any) -> bool:
        """True for the rig's connection or one it recently left: shares for jobs sent there still count."""
        return conn is self.conn or conn in self.recent_conns

    def reply(self, msg: Message, result: Any) -> None:
        """Answer a request; a notification (no id) gets no answer."""
        if msg.id is not None:
            self.send(messages.response(msg.id, result))

    def reply_error(self, msg_id: Any, code: int, message: str) -> None:
        """Answer a request with a Stratum error; a notification (no id) gets none."""
        if msg_id is not None:
            self.send(messages.error_response(msg_id, code, message))

    def _handshake_done(self) -> None:
        raise NotImplementedError

    def _request(self, msg: Message) -> RigRequest | None:
        raise NotImplementedError

    # ------------------------------------------------------------------ bytes in (the hot path)

    def receive(self, data: bytes, now: float, sink: Any, shares: ShareSink) -> None:
        """Frame, rate-limit and decode ``data``; each request that needs the farm goes to
        ``sink`` (a submit to ``shares``) and is handled before the next line is read."""
        try:
            lines = self.framer.feed(data)
        except LineTooLong as exc:
            sink.rig_request(self, Violation(str(exc)), now)
            return
        if not lines:
            return
        rate = self.policy.max_requests_per_s
        self.tokens = min(rate * RATE_BURST, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        for line in lines:
            if self.state is self.CLOSED_STATE:
                return
            if self.tokens < 1.0:
                # a flood costs the flooder only: refuse, and close a rig that keeps on
                self.rate_limited += 1
                sink.rig_request(self, RateLimited(), now)
                if self.rate_limited > RATE_LIMIT_CLOSE_AFTER:
                    sink.rig_request(self, Violation("request flood", bad_line=False), now)
                    return
                if self.rate_limited % 100 == 1:  # say why, without decoding what we refuse
                    self.send(RATE_LIMITED_ERROR)
                continue
            self.tokens -= 1.0
            try:
                msg = messages.decode(line)
            except BadMessage as exc:
                if exc.msg_id is None:
                    sink.rig_request(self, Violation(f"garbage: {exc}"), now)
                    return
                self.reply_error(exc.msg_id, errors.PARSE_ERROR, str(exc)[:200])
                sink.rig_request(self, BadLine(), now)
                continue
            if msg.method == "mining.submit":
                shares.submit(self, msg, now)
                continue
            try:
                request = self._request(msg)
            except StratumError as exc:
                self.reply_error(msg.id, exc.code, exc.message)
                continue
            if request is not None:
                sink.rig_request(self, request, now)


    def _authorize(self, msg: Message) -> AuthorizeRequest:
        params = msg.params or []
        if not params or not isinstance(params[0], str) or not params[0] or len(params[0]) > 256:
            raise StratumError(errors.UNAUTHORIZED, "worker name must be a non-empty string")
        worker = params[0]
        allowed = self.policy.allowed_workers
        if allowed and not any(fnmatchcase(worker, pattern) for pattern in allowed):
            raise StratumError(errors.UNAUTHORIZED, f"worker {worker[:64]!r} is not allowed here")
        first = not self.workers
        if worker not in self.workers:
            self.workers.append(worker)
        self.reply(msg, True)
        self._handshake_done()
        return AuthorizeRequest(msg, first)
