"""The decision log: every pool switch and health change with its reason.

Kept in memory for the API and written as one structured log record each, so an
operator can answer "why did the farm move at 03:12?" from either place.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

log = logging.getLogger("proxy.events")


class EventLog:
    def __init__(self, maxlen: int = 2000) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = 0
        self.listeners: list[Any] = []

    def emit(self, kind: str, wall_time: float, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        event = {"seq": self._seq, "time": round(wall_time, 3), "kind": kind, **fields}
        self._events.append(event)
        log.info("%s %s", kind, json.dumps(event, default=str, sort_keys=True))
        for listener in self.listeners:
            listener(event)
        return event

    def subscribe(self, listener: Any) -> None:
        """Call ``listener(event)`` for every event from now on, in the emitter's call."""
        self.listeners.append(listener)

    def unsubscribe(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def recent(self, limit: int = 200, kind: str | None = None) -> list[dict[str, Any]]:
        items = [e for e in self._events if kind is None or e["kind"] == kind]
        return items[-limit:]

    def __len__(self) -> int:
        return len(self._events)
