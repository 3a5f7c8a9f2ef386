"""Rig connections: one asyncio.Protocol per rig, bytes straight into the core."""

from __future__ import annotations

import asyncio
import logging
import socket
from time import monotonic
from typing import TYPE_CHECKING

from .proxyproto import ProxyHeaderError, ProxyProtocolPolicy, parse

if TYPE_CHECKING:
    from ..core.coordinator import ProxyCore
    from ..core.rig import RigSession

log = logging.getLogger("proxy.net")

# A rig that stops reading while we keep writing jobs is dropped rather than buffered forever.
WRITE_HIGH_WATER = 256 * 1024
STUCK_WRITER_S = 30.0
PROXY_HEADER_TIMEOUT_S = 5.0  # a balancer sends the header at once; anything else is not one


class RigProtocol(asyncio.Protocol):
    """One rig's transport.  With the PROXY protocol on, the rig's session starts only once
    a trusted balancer's header has given its real address; anything else is closed."""

    __slots__ = ("core", "loop", "transport", "rig", "_paused_handle", "policy", "_peer", "_pending",
                 "_header_timer")

    def __init__(self, core: ProxyCore, loop: asyncio.AbstractEventLoop,
                 policy: ProxyProtocolPolicy | None = None) -> None:
        self.core = core
        self.loop = loop
        self.policy = policy
        self.transport: asyncio.Transport | None = None
        self.rig: RigSession | None = None
        self._paused_handle: asyncio.TimerHandle | None = None
        self._peer = ""
        self._pending: bytes | None = None  # bytes before a complete PROXY header
        self._header_timer: asyncio.TimerHandle | None = None

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
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        policy = self.policy
        if policy is None:
            self._start(self._peer)
            return
        if not (isinstance(peer, tuple) and policy.trusts(str(peer[0]))):
            log.warning("closing %s: not a trusted proxy (proxy.trusted_proxies), no PROXY header "
                        "taken from it", self._peer)
            transport.abort()
            return
        self._pending = b""
        self._header_timer = self.loop.call_later(PROXY_HEADER_TIMEOUT_S, self._refuse,
                                                  f"no PROXY v{policy.version} header within "
                                                  f"{PROXY_HEADER_TIMEOUT_S:g}s")

    def _start(self, peer: str) -> None:
        assert self.transport is not None
        self.rig = self.core.rig_connected(peer, self.transport.write, self._close, monotonic())

    def data_received(self, data: bytes) -> None:
        rig = self.rig
        if rig is not None:
            self.core.rig_data(rig, data, monotonic())
        elif self._pending is not None:
            self._header(self._pending + data)

    def _header(self, buffer: bytes) -> None:
        """Bytes before the session: the PROXY header, then (maybe) the rig's first lines."""
        assert self.policy is not None
        try:
            parsed = parse(buffer, self.policy.version)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if parsed is None:
            self._pending = buffer
            return
        header, used = parsed
        self._pending = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        source = header.source
        self._start(f"{source[0]}:{source[1]}" if source is not None else self._peer)
        if used < len(buffer) and self.rig is not None:
            self.core.rig_data(self.rig, buffer[used:], monotonic())

    def _refuse(self, reason: str) -> None:
        log.warning("closing %s: %s", self._peer, reason)
        self._pending = None
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._paused_handle is not None:
            self._paused_handle.cancel()
        if self._header_timer is not None:
            self._header_timer.cancel()
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


async def wait_closed(server: asyncio.Server | None, timeout_s: float = 2.0) -> None:
    """After ``server.close()``: wait for its connections to go, but never hang a shutdown on
    a rig that does not let go (the process is stopping anyway)."""
    if server is None:
        return
    try:
        await asyncio.wait_for(server.wait_closed(), timeout_s)
    except TimeoutError:
        pass
