"""What a pool connection reports, one typed event per happening (see ``upstream``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..stratum.messages import Notify

if TYPE_CHECKING:
    pass


@dataclass(slots=True)
class LateAnswer:
    """An answer to an id with nothing pending (duplicate, unknown, after a timeout)."""


@dataclass(slots=True)
class ExtranonceSet:
    """The pool gave its extranonce layout: it decides whether rigs can be folded onto it."""

    extranonce1: bytes
    extranonce2_size: int
    by_pool: bool  # mining.set_extranonce (True) or the subscribe answer (False)


@dataclass(slots=True)
class JobReceived:
    """The pool sent mining.notify: the coordinator stores it before the connection may turn ready."""

    notify: Notify


@dataclass(slots=True)
class DifficultySet:
    """The pool changed its difficulty (only sent when it differs from the current one)."""

    difficulty: float


@dataclass(slots=True)
class VersionMaskSet:
    """The pool sent mining.set_version_mask: the rigs' masks must follow."""

    mask: int


@dataclass(slots=True)
class BecameReady:
    """Subscribed, authorized and holding a job."""


@dataclass(slots=True)
class ReconnectAsked:
    """The pool sent client.reconnect: where to dial the replacement (this connection's host or
    port where the pool gave none valid)."""

    host: str
    port: int


@dataclass(slots=True)
class PoolSaid:
    """The pool sent client.show_message: its text (cut to 500 characters)."""

    text: str


@dataclass(slots=True)
class ProtocolFailure:
    """The pool broke the protocol; the coordinator fails the pool with this reason."""

    reason: str


PoolEvent = (LateAnswer | ExtranonceSet | JobReceived | DifficultySet
             | VersionMaskSet | BecameReady | ReconnectAsked | PoolSaid | ProtocolFailure)
