"""Rig connections: one asyncio.Protocol per rig, bytes straight into the core."""

from __future__ import annotations

import asyncio
import logging
import socket
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.coordinator import ProxyCore
    from ..core.rig import RigSession

log = logging.getLogger("proxy.net")

# A rig that stops reading while we keep writing jobs is dropped rather than buffered forever.
WRITE_HIGH_WATER = 256 * 1024
STUCK_WRITER_S = 30.0


class RigProtocol(asyncio.Protocol):
    __slots__ = ("core", "loop", "transport", "rig", "_paused_handle")

    def __init__(self, core: ProxyCore, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.rig: RigSession | None = None
        self._paused_handle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.rig = self.core.rig_connected(peer_text, transport.write, self._close, monotonic())

    def data_received(self, data: bytes) -> None:
        rig = self.rig
        if rig is not None:
            self.core.rig_data(rig, data, monotonic())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._paused_handle is not None:
            self._paused_handle.cancel()
        if self.rig is not None:
            self.core.rig_closed(self.rig, monotonic())

    def pause_writing(self) -> None:
        self._paused_handle = self.loop.call_later(STUCK_WRITER_S, self._drop_stuck)

    def resume_writing(self) -> None:
        if self._paused_handle is not None:
            self._paused_handle.cancel()
            self._paused_handle = None

    def _drop_stuck(self) -> None:
        if self.transport is not None and self.rig is not None:
            log.warning("rig %s stopped reading for %.0fs: closing", self.rig.peer, STUCK_WRITER_S)
            self.transport.abort()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
