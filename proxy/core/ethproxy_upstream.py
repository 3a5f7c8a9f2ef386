"""One TCP connection to a getwork-dialect pool (eth_submitLogin / eth_getWork /
eth_submitWork): the ``EthPoolConnection`` state machine with that dialect's handshake and
lines.  The pool gives no extranonce (it stays empty), so any number of rigs share one
connection, and work arrives as answers to eth_getWork or as unasked pushes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..stratum import errors, ethproxy, messages
from ..stratum.errors import StratumError, reason_from_error
from ..stratum.ethproxy import EthWork
from ..stratum.messages import Message
from .eth_upstream import (
    AUTHORIZE_ID,
    SUBSCRIBE_ID,
    EthJobArrived,
    EthPending,
    EthPoolConnection,
    EthPoolSink,
)
from .pool_events import DifficultySet, LateAnswer

if TYPE_CHECKING:
    from .eth_jobs import EthJob
    from .eth_rig import EthRigSession

LOGIN_ID, GETWORK_ID = AUTHORIZE_ID, SUBSCRIBE_ID
DIFF1 = 2**256 / 2**32  # NiceHash's Ethash difficulty 1: a target of 2^224


def target_difficulty(target_hex: str) -> float:
    """The share difficulty a getwork target stands for (0 for a target of 0)."""
    target = int(target_hex or "0", 16)
    return DIFF1 / target if target else 0.0


class EthProxyPoolConnection(EthPoolConnection):
    """A getwork-dialect pool connection (see the module docstring)."""

    __slots__ = ("_works",)

    def __init__(self, conn_id: int, pool: Any, host: str, port: int, max_line: int) -> None:
        super().__init__(conn_id, pool, host, port, max_line)
        self.subscribed = True  # nothing to subscribe to: login and work make it ready
        self._works = 0

    def takes(self, prefix: bytes) -> bool:
        """Any rig: getwork rigs choose their own nonces, no prefix to keep apart."""
        return True

    def connected(self, send: Callable[[bytes], None], now: float, user: str, password: str) -> None:
        """TCP is up: log in and ask for work, pipelined."""
        self.send = send
        self.state = type(self.state).HANDSHAKE
        self.connected_at = self.last_rx = now
        send(messages.request(LOGIN_ID, "eth_submitLogin", [user, password])
             + messages.request(GETWORK_ID, "eth_getWork", []))

    def submit(self, rig: EthRigSession, rig_msg_id: Any, job: EthJob, work: EthWork, worker: str,  # type: ignore[override]
               now: float) -> None:
        """Forward a getwork share as the rig found it; the verdict comes back to the rig."""
        msg_id = self.next_id
        self.next_id += 1
        self.pending[msg_id] = EthPending(now, rig, rig_msg_id, job.difficulty)
        self.send(ethproxy.submit_request(msg_id, work))
        self.watch(now, self, msg_id)

    def _handle(self, msg: Message, now: float, sink: EthPoolSink) -> None:
        if ethproxy.is_work(msg) or (msg.id == GETWORK_ID and msg.method is None and msg.error is None):
            self._work(msg.result, now, sink)
        elif msg.method is None:
            self._answer(msg, now, sink)
        elif msg.id is not None:
            self.send(messages.error_response(msg.id, errors.METHOD_NOT_FOUND, "unknown method"))

    def _work(self, result: Any, now: float, sink: EthPoolSink) -> None:
        self._works += 1
        job = ethproxy.parse_work(result, f"w{self._works}")
        difficulty = target_difficulty(job.target)
        if difficulty and difficulty != self.difficulty:
            self.difficulty = difficulty
            sink.pool_event(self, DifficultySet(difficulty), now)
        sink.pool_event(self, EthJobArrived(job), now)
        self._maybe_ready(now, sink)

    def _answer(self, msg: Message, now: float, sink: EthPoolSink) -> None:
        msg_id = msg.id
        pending = self.pending.pop(msg_id, None) if isinstance(msg_id, int) else None
        if pending is not None:
            accepted = msg.result is True and msg.error is None
            reason = "" if accepted else (reason_from_error(msg.error) if msg.error else "rejected")
            sink.share_answered(self, pending, accepted, reason, now)
        elif msg_id == LOGIN_ID and not self.authorized:
            if msg.result is not True:
                raise StratumError(errors.UNAUTHORIZED,
                                   f"login refused: {reason_from_error(msg.error) or msg.result}")
            self.authorized = True
            self._maybe_ready(now, sink)
        elif msg_id == GETWORK_ID:
            raise StratumError(errors.OTHER, f"eth_getWork refused: {reason_from_error(msg.error)}")
        else:
            sink.pool_event(self, LateAnswer(), now)
