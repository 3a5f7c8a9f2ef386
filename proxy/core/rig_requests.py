"""What a rig's session hands the coordinator: typed requests, and where they go (see ``rig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..stratum.messages import Message

if TYPE_CHECKING:
    from .rig import RigSession


@dataclass(slots=True)
class SubscribeRequest:
    """mining.subscribe: the answer fixes the rig's extranonce layout, so the coordinator gives it."""

    msg: Message


@dataclass(slots=True)
class AuthorizeRequest:
    """mining.authorize of an allowed worker, already answered by the session."""

    msg: Message
    first: bool  # the rig's first worker: it may now be placed


@dataclass(slots=True)
class ConfigureRequest:
    """mining.configure: the version mask depends on the pool, so the coordinator answers it."""

    msg: Message
    requested_mask: int | None  # None: no version-rolling extension asked for


@dataclass(slots=True)
class SubmitRequest:
    """mining.submit: the share path checks it and answers."""

    msg: Message


@dataclass(slots=True)
class Violation:
    """The rig broke framing or flooded: the coordinator closes it with this reason."""

    reason: str
    bad_line: bool = True  # False for a flood (counted as rate limited instead)


@dataclass(slots=True)
class BadLine:
    """A malformed request with an id: answered with a parse error, the rig stays."""


@dataclass(slots=True)
class RateLimited:
    """A request dropped by the rate limit."""


RigRequest = (SubscribeRequest | AuthorizeRequest | ConfigureRequest | SubmitRequest | Violation
              | BadLine | RateLimited)


class RigSink(Protocol):
    """Where a session delivers what needs the farm (the coordinator): a typed request."""

    def rig_request(self, rig: RigSession, request: RigRequest, now: float) -> None:
        """Handle one request, before the session reads the next line."""


class ShareSink(Protocol):
    """Where a session delivers a mining.submit, as its decoded message: the hot path goes
    straight to the share desk, no wrapper object, no extra frame."""

    def submit(self, rig: RigSession, msg: Message, now: float) -> None:
        """Check, answer and (if owed to the pool) forward one share."""
