"""One rig's connection, as a protocol state machine: bytes in, typed requests out.

The session owns the rig's side of Stratum: line framing, the request-rate bucket, decoding,
the handshake and the answers that need nothing but the session (extranonce.subscribe,
suggest_difficulty, get_version, unknown methods, malformed lines).  What needs the farm
(subscribe's layout, authorize, configure's mask, submit) comes out as a typed request for
the coordinator, one at a time, so each is handled before the next line is read.

Firmware pipelines configure/subscribe/authorize in one write and in any order, so the
handshake is two flags inside the HANDSHAKE state; the lifecycle itself is explicit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..stratum import errors, messages
from ..stratum.errors import StratumError
from ..stratum.framing import LineFramer
from ..stratum.messages import Message
from .rig_base import RATE_BURST, RigBase, RigState
from .rig_requests import ConfigureRequest, RigRequest, SubmitRequest, SubscribeRequest
from .stats import RateMeter
from .vardiff import RigDifficulty

if TYPE_CHECKING:
    from .jobs import Job
    from .pool import PoolState
    from .upstream import PoolConnection

log = logging.getLogger("proxy.core")

class RigPolicy:
    """The settings every session applies alone (one object shared by all sessions)."""

    __slots__ = ("max_requests_per_s", "allowed_workers", "max_line")

    def __init__(self, max_requests_per_s: float, allowed_workers: list[str], max_line: int) -> None:
        self.max_requests_per_s = max_requests_per_s
        self.allowed_workers = allowed_workers
        self.max_line = max_line


class RigSession(RigBase):
    """The state of one rig connection (see the module docstring)."""


    __slots__ = (
        "rig_id", "peer", "address", "send", "close", "policy", "framer", "state", "subscribed",
        "subscribe_held", "user_agent", "workers", "extranonce_subscribed", "prefix", "has_prefix",
        "extranonce1", "extranonce2_size", "requested_mask", "version_mask", "difficulty",
        "suggested_difficulty", "conn", "pool", "recent_conns", "connected_at", "last_share_at",
        "accepted", "rejected", "accepted_difficulty", "hashrate", "last_sent_job",
        "upstream_worker", "last_work_at", "tokens", "tokens_at", "rate_limited", "vardiff",
        "stalled",
    )

    def __init__(self, rig_id: int, peer: str, send: Callable[[bytes], None],
                 close: Callable[[], None], policy: RigPolicy, now: float) -> None:
        self.rig_id = rig_id
        self.peer = peer
        self.address = peer.rsplit(":", 1)[0]
        self.send = send
        self.close = close
        self.policy = policy
        self.framer = LineFramer(policy.max_line)
        self.state = RigState.HANDSHAKE
        self.subscribed = False  # the subscribe answer was sent (its layout is fixed)
        self.subscribe_held: Any = None  # subscribe id held until the layout is known
        self.user_agent = ""
        self.workers: list[str] = []
        self.extranonce_subscribed = False
        self.prefix = b""
        self.has_prefix = False  # allocated at the first subscribe, released at close
        # the layout the rig uses now: its prefix and the proxy's size, or a too-narrow
        # pool's own extranonce after mining.set_extranonce
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.requested_mask: int | None = None  # None: the rig did not ask for version rolling
        self.version_mask = 0
        self.difficulty: float | None = None
        self.suggested_difficulty: float | None = None
        self.conn: PoolConnection | None = None  # kept by the placement
        self.pool: PoolState | None = None
        self.recent_conns: list[PoolConnection] = []
        self.connected_at = now
        self.last_share_at = 0.0
        self.accepted = 0
        self.rejected: Counter = Counter()
        self.accepted_difficulty = 0.0
        self.hashrate = RateMeter(start=now)
        self.last_sent_job: Job | None = None
        self.upstream_worker = ""
        self.last_work_at = 0.0
        self.tokens = policy.max_requests_per_s * RATE_BURST
        self.tokens_at = now
        self.rate_limited = 0
        self.vardiff = RigDifficulty(now)
        self.stalled = False  # no share for several intervals (reported, feeds the backfill)

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once the session is closed: its data is ignored and it holds nothing."""
        return self.state is RigState.CLOSED

    @property
    def authorized(self) -> bool:
        """True once at least one worker was authorized."""
        return bool(self.workers)

    @property
    def placeable(self) -> bool:
        """Subscribed and authorized, not leaving: the router may give it a pool."""
        return self.state is RigState.ACTIVE

    def _handshake_done(self) -> None:
        if self.state is RigState.HANDSHAKE and self.subscribed and self.authorized:
            self.to(RigState.ACTIVE)

    # ------------------------------------------------------------------ answers

    def request_failed(self, request: RigRequest, exc: Exception) -> bool:
        """Answer a request whose handling raised; True when it counts as a rejected share.
        A StratumError is the refusal meant for the rig; anything else is a bug, logged."""
        msg = getattr(request, "msg", None)
        if msg is None:  # a counter or a close failed: nothing to answer
            log.exception("error handling %s for rig %s", type(request).__name__, self.rig_id)
            return False
        if isinstance(exc, StratumError):
            self.reply_error(msg.id, exc.code, exc.message)
            return False
        log.exception("error handling %r from rig %s", msg.method, self.rig_id)
        self.reply_error(msg.id, errors.OTHER, "internal error")
        if type(request) is SubmitRequest:  # answered as a reject, so counted as one
            self.rejected[errors.OTHER] += 1
            return True
        return False

    def answer_subscribe(self, msg_id: Any, extranonce1: bytes, extranonce2_size: int) -> None:
        """Answer (a held or a fresh) subscribe with the layout the rig keeps for its life."""
        self.subscribe_held = None
        self.extranonce1 = extranonce1
        self.extranonce2_size = extranonce2_size
        self.subscribed = True
        sid = f"{self.rig_id:08x}"
        self.send(messages.response(msg_id, [[["mining.set_difficulty", sid], ["mining.notify", sid]],
                                             extranonce1.hex(), extranonce2_size]))
        self._handshake_done()

    def set_extranonce(self, extranonce1: bytes, extranonce2_size: int) -> None:
        """Give the rig a new layout by mining.set_extranonce; only for a rig that subscribed to it."""
        self.extranonce1 = extranonce1
        self.extranonce2_size = extranonce2_size
        self.send(messages.notification("mining.set_extranonce", [extranonce1.hex(), extranonce2_size]))

    def ask_to_reconnect(self) -> None:
        """Last resort for a layout the rig cannot take: it comes back as a new session."""
        self.to(RigState.LEAVING)
        self.send(messages.notification("client.reconnect", []))

    def set_version_mask(self, mask: int) -> None:
        """Send mining.set_version_mask, only when the mask changed."""
        if mask != self.version_mask:
            self.version_mask = mask
            self.send(messages.notification("mining.set_version_mask", [f"{mask:08x}"]))

    # ------------------------------------------------------------------ bytes in

    def _request(self, msg: Message) -> RigRequest | None:
        method = msg.method
        if method == "mining.subscribe":
            if not self.subscribed and self.subscribe_held is None and msg.params \
                    and isinstance(msg.params[0], str):
                self.user_agent = msg.params[0][:128]
            return SubscribeRequest(msg)
        if method == "mining.authorize":
            return self._authorize(msg)
        if method == "mining.configure":
            return self._configure(msg)
        if method == "mining.extranonce.subscribe":
            self.extranonce_subscribed = True
            self.reply(msg, True)
        elif method in ("mining.suggest_difficulty", "mining.suggest_target"):
            if method == "mining.suggest_difficulty" and msg.params:
                try:
                    self.suggested_difficulty = messages.parse_difficulty(msg.params)
                    self.vardiff.minimum = self.suggested_difficulty
                except StratumError:
                    raise StratumError(errors.INVALID_PARAMS,
                                       "difficulty must be a positive number") from None
            self.reply(msg, True)
        elif method is None:
            pass  # a response from the rig (e.g. to client.get_version): nothing to do
        elif method == "client.get_version":
            self.reply(msg, f"stratum-proxy/{__version__}")
        else:
            raise StratumError(errors.METHOD_NOT_FOUND, f"unknown method {method[:64]!r}")
        return None

    def _configure(self, msg: Message) -> ConfigureRequest:
        params = msg.params or []
        if len(params) < 1 or not isinstance(params[0], list):
            raise StratumError(errors.INVALID_PARAMS, "mining.configure takes [extensions, options]")
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        requested = None
        if "version-rolling" in params[0]:
            try:
                requested = messages.parse_version_mask(options.get("version-rolling.mask", "ffffffff"))
            except StratumError:
                raise StratumError(errors.INVALID_PARAMS,
                                   "version-rolling.mask must be 8 hex digits") from None
            self.requested_mask = requested
        return ConfigureRequest(msg, requested)

    def __repr__(self) -> str:
        return f"<Rig {self.rig_id} {self.worker or '-'} @{self.peer} {self.state.value}>"
