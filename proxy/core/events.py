"""The decision log: typed events for every pool switch, health change and operator action.

The core publishes typed records (msgspec Structs, one class per kind) so a field cannot be
misspelt at one call site and silently missing from the history; the log keeps them as the
JSON shape the API, the dashboard and the history store read (``seq``, ``time``, ``kind``
and the event's fields), and writes each as one structured log record, so an operator can
answer "why did the farm move at 03:12?" from either place.  The service owns the log (the
event bus); outer layers subscribe to it and never append to the core.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

log = logging.getLogger("proxy.events")


class CoreEvent(msgspec.Struct, kw_only=True, tag_field="kind", omit_defaults=True):
    """Base of every event the core publishes; ``kind`` is the class's tag."""


class PoolHealthChanged(CoreEvent, tag="pool_health"):
    """A pool's health moved from one state to another: the only way health changes."""

    pool: str
    previous: str
    state: str
    reason: str


class PoolSwitched(CoreEvent, tag="pool_switch"):
    """The active group (the pools that get the hashrate) changed."""

    from_pools: list[str]
    to_pools: list[str]
    reason: str
    rigs_moved: int
    note: str = ""
    extranonce_changes: dict[str, int] = {}


class PoolChanged(CoreEvent, tag="pool_changed"):
    """An operator changed a pool's priority, weight or enabled flag."""

    pool: str
    changes: dict[str, dict[str, Any]]


class PoolDrained(CoreEvent, tag="pool_drain"):
    """An operator drained a pool: its ``rigs`` are being moved to the other pools."""

    pool: str
    rigs: int


class PoolUndrained(CoreEvent, tag="pool_undrain"):
    """An operator let a drained pool take rigs again."""

    pool: str


class ConfigReloaded(CoreEvent, tag="config_reloaded"):
    """A live config reload was applied: the pools added, removed and updated (rigs moved, none
    disconnected)."""

    added: list[str]
    removed: list[str]
    updated: list[str]


class PoolNarrow(CoreEvent, tag="pool_narrow"):
    """A pool's extranonce2 is too small for the proxy's layout: rigs cannot be folded onto it."""

    pool: str
    reason: str


class PoolExtranonce(CoreEvent, tag="pool_extranonce"):
    """A pool told its extranonce2_size for the first time (or a new one): remembered across
    restarts, so the layout is right even when that pool is down at the next start."""

    pool: str
    extranonce2_size: int


class LayoutChosen(CoreEvent, tag="extranonce_layout"):
    """The rigs' extranonce layout is fixed (every rig's subscribe answer uses it)."""

    prefix_size: int
    extranonce2_size: int
    reason: str


class PoolSetExtranonce(CoreEvent, tag="pool_set_extranonce"):
    """The pool sent mining.set_extranonce: the new layout may make it too narrow for the fold."""

    pool: str
    extranonce1: str
    extranonce2_size: int


class PoolReconnectRequested(CoreEvent, tag="pool_reconnect_requested"):
    """The pool sent client.reconnect: a replacement connection is dialed to ``host``:``port``."""

    pool: str
    host: str
    port: int


class PoolMessage(CoreEvent, tag="pool_message"):
    """The pool sent client.show_message: its text, kept for the operator."""

    pool: str
    message: str


class RigsExtranonceChanged(CoreEvent, tag="rigs_extranonce_changed"):
    """Rigs had to take another extranonce layout (set_extranonce or client.reconnect)."""

    pool: str
    reason: str
    extranonce_changes: dict[str, int]


class RigsStalled(CoreEvent, tag="rigs_stalled"):
    """Rigs that sent no share for several of their share intervals (one event per pass
    over the rigs, however many): their hashrate is about to be missing."""

    count: int
    workers: list[str]  # the first few
    hashrate: float  # what they delivered before they went quiet (H/s)
    reason: str


class RigsResumed(CoreEvent, tag="rigs_resumed"):
    """Stalled rigs that are sending shares again."""

    count: int
    workers: list[str]


Listener = Callable[[dict[str, Any]], None]


class EventLog:
    """The bus and its memory: recent events for the API, listeners for the history store."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = 0
        self._listeners: list[Listener] = []

    def publish(self, event: CoreEvent, wall_time: float) -> dict[str, Any]:
        """Record a typed core event."""
        fields = msgspec.to_builtins(event)
        kind = fields.pop("kind")
        return self.emit(kind, wall_time, **fields)

    def emit(self, kind: str, wall_time: float, **fields: Any) -> dict[str, Any]:
        """Record an event of an outer layer (the rental controller's decisions)."""
        self._seq += 1
        event = {"seq": self._seq, "time": round(wall_time, 3), "kind": kind, **fields}
        self._events.append(event)
        log.info("%s %s", kind, json.dumps(event, default=str, sort_keys=True))
        for listener in self._listeners:
            listener(event)
        return event

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event from now on, in the publisher's call."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling a listener given to ``subscribe`` (a closing history store); ValueError if unknown."""
        self._listeners.remove(listener)

    @property
    def listener_count(self) -> int:
        """How many listeners are subscribed (to check that outer layers let go)."""
        return len(self._listeners)

    def recent(self, limit: int = 200, kind: str | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` events kept in memory, oldest first, optionally only of one ``kind``."""
        items = [e for e in self._events if kind is None or e["kind"] == kind]
        return items[-limit:]

    def __len__(self) -> int:
        return len(self._events)


def emit_safely(sink: Callable[..., None] | None, logger: logging.Logger, kind: str, reason: str,
                **fields: Any) -> None:
    """An outer layer's decision (rental, power): logged, then handed to its event sink; a
    sink that fails is logged and never stops the decision."""
    logger.info("%s: %s", kind, reason)
    if sink is None:
        return
    try:
        sink(kind, reason, **fields)
    except Exception:
        logger.exception("%s event sink failed", kind.split("_", 1)[0])
