"""One GPU rig's EthereumStratum/1.0.0 connection, as a protocol state machine.

Bytes in, typed requests out (the same ``rig_requests`` records the SV1 session hands its
coordinator, so the two cores share their vocabulary).  The session answers alone what
needs nothing but itself (authorize, extranonce.subscribe, unknown methods); subscribe
needs the pool's extranonce and submit needs the pool's verdict, so they go to the core.

The rig's extranonce is the pool's extranonce + the rig's own prefix (unique among the
rigs sharing a pool connection, fixed for the rig's life): moving the rig to another pool
changes only the pool's part, sent by ``mining.set_extranonce``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..stratum import errors, ethstratum, messages
from ..stratum.errors import StratumError
from ..stratum.framing import LineFramer
from ..stratum.messages import Message
from .rig import RigPolicy
from .rig_base import RATE_BURST, RigBase, RigState
from .rig_requests import (
    RigRequest,
    SubscribeRequest,
)
from .stats import RateMeter

if TYPE_CHECKING:
    from .eth_jobs import EthJob
    from .eth_upstream import EthPoolConnection
    from .pool import PoolState

log = logging.getLogger("proxy.core.eth")

# NiceHash's EthereumStratum difficulty 1 is about 2^32 hashes per share (as SV1's): the rigs'
# meters count hashes, so the weighted split (``Router.steer``) reads them as SV1 ones
HASHES_PER_DIFFICULTY = 2.0**32


class EthRigSink(Protocol):
    """Where the session delivers requests that need the farm (the eth core)."""

    def rig_request(self, rig: EthRigSession, request: RigRequest, now: float) -> None:
        """Handle one request before the next line is read."""


class EthRigSession(RigBase):
    """The state of one GPU rig connection (see the module docstring)."""


    __slots__ = ("rig_id", "peer", "send", "close", "policy", "framer", "state", "subscribe_held",
                 "user_agent", "workers", "extranonce_subscribed", "prefix", "extranonce", "conn",
                 "pool", "recent_conns", "connected_at", "accepted", "rejected", "hashrate",
                 "difficulty", "last_job", "tokens", "tokens_at", "rate_limited", "in_flight")

    def __init__(self, rig_id: int, peer: str, send: Callable[[bytes], None],
                 close: Callable[[], None], policy: RigPolicy, prefix: bytes, now: float) -> None:
        self.rig_id = rig_id
        self.peer = peer
        self.send = send
        self.close = close
        self.policy = policy
        self.framer = LineFramer(policy.max_line)
        self.state = RigState.HANDSHAKE
        self.subscribe_held: Any = None  # the subscribe id, until a pool gives an extranonce
        self.user_agent = ""
        self.workers: list[str] = []
        self.extranonce_subscribed = False
        self.prefix = prefix
        self.extranonce: bytes | None = None  # what the rig mines under (None: not answered)
        self.conn: EthPoolConnection | None = None
        self.pool: PoolState | None = None
        self.recent_conns: list[EthPoolConnection] = []
        self.connected_at = now
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.hashrate = RateMeter(start=now)
        self.difficulty: float | None = None
        self.last_job: EthJob | None = None
        self.tokens = policy.max_requests_per_s * RATE_BURST
        self.tokens_at = now
        self.rate_limited = 0
        self.in_flight = 0  # shares forwarded and waiting on the pool's verdict

    @property
    def closed(self) -> bool:
        """True once closed: its data is ignored and it holds nothing."""
        return self.state is RigState.CLOSED

    @property
    def placeable(self) -> bool:
        """The router may give it a pool: subscribed or waiting for its answer, not leaving."""
        return self.state in (RigState.HANDSHAKE, RigState.ACTIVE) and (
            self.subscribe_held is not None or self.extranonce is not None)

    def _handshake_done(self) -> None:
        if self.state is RigState.HANDSHAKE and self.extranonce is not None and self.workers:
            self.to(RigState.ACTIVE)

    # ------------------------------------------------------------------ what the core sends

    def answer_subscribe(self, extranonce: bytes) -> None:
        """Answer the held subscribe: the rig mines under ``extranonce`` from now on."""
        msg_id, self.subscribe_held = self.subscribe_held, None
        self.extranonce = extranonce
        self.send(ethstratum.subscribe_answer(msg_id, f"{self.rig_id:08x}", extranonce))
        self._handshake_done()

    def set_extranonce(self, extranonce: bytes) -> None:
        """A new pool's extranonce (+ the rig's prefix); only for a rig that subscribed to it."""
        self.extranonce = extranonce
        self.send(ethstratum.set_extranonce_line(extranonce))

    def ask_to_reconnect(self) -> None:
        """For a rig that cannot take a new extranonce: it comes back as a new session."""
        self.to(RigState.LEAVING)
        self.send(messages.notification("client.reconnect", []))

    def send_job(self, job: EthJob, clean: bool) -> None:
        """The job (and its difficulty first, when it changed), once the rig is mining."""
        if self.state is not RigState.ACTIVE:
            return
        if job.difficulty != self.difficulty:
            self.difficulty = job.difficulty
            self.send(ethstratum.set_difficulty_line(job.difficulty))
        self.last_job = job
        self.send(job.line(clean))

    # ------------------------------------------------------------------ bytes in

    def _request(self, msg: Message) -> RigRequest | None:
        method = msg.method  # (mining.submit goes straight to the core's ``submit``)
        if method == "mining.subscribe":
            params = msg.params or []
            protocol = params[1] if len(params) > 1 else None
            if isinstance(protocol, str) and not protocol.startswith("EthereumStratum/"):
                raise StratumError(errors.INVALID_PARAMS, f"this port speaks {ethstratum.PROTOCOL}, "
                                                          f"not {protocol[:40]!r}")
            if self.extranonce is not None or self.subscribe_held is not None:
                raise StratumError(errors.OTHER, "already subscribed")
            if params and isinstance(params[0], str):
                self.user_agent = params[0][:128]
            self.subscribe_held = msg.id if msg.id is not None else 0
            return SubscribeRequest(msg)
        if method == "mining.authorize":
            return self._authorize(msg)
        if method == "mining.extranonce.subscribe":
            self.extranonce_subscribed = True
            self.reply(msg, True)
        elif method in ethstratum.LEGACY_METHODS:
            raise StratumError(errors.METHOD_NOT_FOUND, "the eth_submitLogin/eth_getWork dialect is "
                                                        f"not supported: use {ethstratum.PROTOCOL}")
        elif method is None:
            pass  # a response from the rig
        elif method == "client.get_version":
            self.reply(msg, f"stratum-proxy/{__version__}")
        else:
            raise StratumError(errors.METHOD_NOT_FOUND, f"unknown method {method[:64]!r}")
        return None

    def __repr__(self) -> str:
        return f"<EthRig {self.rig_id} {self.worker or '-'} @{self.peer} {self.state.value}>"
