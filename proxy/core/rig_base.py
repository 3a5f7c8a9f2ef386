"""What a rig session does the same whatever its protocol (SV1's ``RigSession``, the GPU
rigs' ``EthRigSession``): its lifecycle moves, its name, where it may still submit, plain
answers, and authorize (the worker allow-list)."""

from __future__ import annotations

from enum import Enum
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

from ..stratum import errors, messages
from ..stratum.errors import StratumError
from .rig_requests import AuthorizeRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..stratum.messages import Message


class RigBase:
    """Shared methods; each subclass has the slots they read (``rig_id``, ``state``,
    ``workers``, ``pool``, ``conn``, ``recent_conns``, ``policy``, ``send``) and its
    lifecycle table ``NEXT_STATES``."""

    __slots__ = ()
    NEXT_STATES: ClassVar[dict[Any, set[Any]]] = {}
    rig_id: int
    state: Enum
    workers: list[str]
    pool: Any
    conn: Any
    recent_conns: list[Any]
    policy: Any
    send: Callable[[bytes], None]

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
