"""A raw line-level Stratum client for tests that need to send exact bytes.

The rig fleet decides what to send by itself; vector replays and bad-input tests need to
send precisely the lines they choose and look at every line that comes back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

from ..stratum import messages
from ..stratum.framing import LineFramer

__all__ = ["RawClient"]


class RawClient(asyncio.Protocol):
    """Connects, writes lines verbatim, and queues every decoded line received."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer(1 << 20)
        self.received: list[Any] = []  # every line, decoded as plain JSON (or raw bytes)
        self._taken: list[bool] = []
        self._arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self._next_id = 100

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 5.0) -> RawClient:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, proto = await loop.create_connection(cls, host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence no isinstance
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for line in self.framer.feed(data):
            try:
                msg: Any = json.loads(line)
            except ValueError:
                msg = line
            self.received.append(msg)
            self._taken.append(False)
        self._arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self._arrived.set()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send(self, method: str, params: list[Any], msg_id: int | None = None) -> int:
        """Send a request; returns its id."""
        if msg_id is None:
            self._next_id += 1
            msg_id = self._next_id
        self.write(messages.request(msg_id, method, params))
        return msg_id

    async def recv(self, predicate: Callable[[Any], bool] = lambda m: True,
                   timeout: float = 5.0) -> Any:
        """The first received line matching ``predicate`` not returned before.

        Lines are not consumed by non-matching waits, so the order in which a test awaits
        a response and a notification does not matter.
        """
        async with asyncio.timeout(timeout):
            while True:
                for i, msg in enumerate(self.received):
                    if not self._taken[i] and predicate(msg):
                        self._taken[i] = True
                        return msg
                if self.closed.is_set():
                    raise ConnectionError("connection closed")
                self._arrived.clear()
                await self._arrived.wait()

    async def response(self, msg_id: int, timeout: float = 5.0) -> dict[str, Any]:
        return await self.recv(lambda m: isinstance(m, dict) and m.get("id") == msg_id
                               and "method" not in m, timeout)

    async def notification(self, method: str, timeout: float = 5.0) -> dict[str, Any]:
        return await self.recv(lambda m: isinstance(m, dict) and m.get("method") == method,
                               timeout)

    async def call(self, method: str, params: list[Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request and await its response."""
        return await self.response(self.send(method, params), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
