"""Pool connections: dial (TCP or TLS), then bytes straight into the core."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.coordinator import ProxyCore
    from ..core.upstream import PoolConnection

log = logging.getLogger("proxy.net")

DIALS_PER_PASS = 256
# dials whose TCP connect has not finished yet, at most: a failover that dials one connection
# per rig (10,000) otherwise has thousands in flight, whose completions then land in one loop
# pass together (82 ms of stalled loop at 10,000 in the glue benchmark)
DIALS_IN_FLIGHT = 128


def describe_error(exc: BaseException | None) -> str:
    """A reason an operator understands, for events and pool status."""
    if exc is None:
        return "connection closed by pool"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by pool"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "connect timed out"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return f"error: {exc}"


class PoolProtocol(asyncio.Protocol):
    def __init__(self, core: ProxyCore, conn: PoolConnection,
                 loop: asyncio.AbstractEventLoop, registry: dict[int, PoolProtocol]) -> None:
        self.core = core
        self.conn = conn
        self.loop = loop
        self.registry = registry
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.core.pool_data(self.conn, data, monotonic())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if self.registry.get(conn.conn_id) is self:
            del self.registry[conn.conn_id]
        if not conn.alive or getattr(conn, "doomed", ""):  # (the GPU core's have no doomed)
            return  # the core has accounted for it (its pool failed: 9,900 of these at once)
        self.core.pool_closed(conn, describe_error(exc), monotonic())


class Dialer:
    """Implements the core's CoreIO: dials pools, closes them on the core's request, and
    passes the core's timer requests to ``on_wake`` (the service's tick scheduler)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connect_timeout: float,
                 resolver: object | None = None) -> None:
        self.loop = loop
        self.core: ProxyCore | None = None
        self.connect_timeout = connect_timeout
        self.resolver = resolver  # optional async callable host -> ip, for tests that inject DNS
        self.protocols: dict[int, PoolProtocol] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ssl_contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
        self.on_wake: Callable[[float], None] = lambda at: None
        self._queue: deque[PoolConnection] = deque()
        self._closing: deque[asyncio.BaseTransport] = deque()
        self._draining = False
        self._in_flight = 0  # dials started whose connect has not finished

    def wake(self, at: float) -> None:
        self.on_wake(at)

    def dial(self, conn: PoolConnection) -> None:
        """Queue a dial: at most DIALS_PER_PASS start per loop pass and DIALS_IN_FLIGHT connect
        at once, so a failover that needs one connection per rig (10,000 dials) never holds
        the loop for all of them, in its starts or in their completions."""
        self._queue.append(conn)
        self._kick()

    def _kick(self) -> None:
        if not self._draining and self._queue and self._in_flight < DIALS_IN_FLIGHT:
            self._draining = True  # a _start_dials is scheduled
            self.loop.call_soon(self._start_dials)

    def _start_dials(self) -> None:
        self._draining = False
        queue = self._queue
        started = 0
        while queue and started < DIALS_PER_PASS and self._in_flight < DIALS_IN_FLIGHT:
            conn = queue.popleft()
            if not conn.alive:
                continue  # closed while it waited (the pool failed again, shutdown)
            started += 1
            self._in_flight += 1
            task = self.loop.create_task(self._dial(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._kick()

    def _connect_done(self) -> None:
        """A dial's connect finished (up or failed): room for the next queued one."""
        self._in_flight -= 1
        self._kick()

    def close_pool(self, conn: PoolConnection) -> None:
        """Abort the transport; a pool failing with one connection per rig closes thousands
        at once, so they are aborted DIALS_PER_PASS per loop pass (the core has already
        accounted for them: whatever still arrives on one is ignored)."""
        proto = self.protocols.pop(conn.conn_id, None)
        if proto is None or proto.transport is None:
            return
        self._closing.append(proto.transport)
        if len(self._closing) == 1:
            self.loop.call_soon(self._abort_some)

    def _abort_some(self) -> None:
        closing = self._closing
        for _ in range(min(DIALS_PER_PASS, len(closing))):
            closing.popleft().abort()
        if closing:
            self.loop.call_soon(self._abort_some)

    def _ssl_context(self, ca_file: str, verify: bool) -> ssl.SSLContext:
        key = (ca_file, verify)
        ctx = self._ssl_contexts.get(key)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=ca_file or None)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl_contexts[key] = ctx
        return ctx

    async def _dial(self, conn: PoolConnection) -> None:
        core = self.core
        assert core is not None
        cfg = conn.pool.config
        ssl_ctx = self._ssl_context(cfg.ca_file, cfg.tls_verify) if cfg.tls else None
        try:
            host = conn.host
            if self.resolver is not None:
                host = await self.resolver(host)  # type: ignore[operator]
            # asyncio.timeout, not wait_for: no second task per dial (a failover may dial
            # one connection per rig)
            async with asyncio.timeout(self.connect_timeout):
                transport, proto = await self.loop.create_connection(
                    lambda: PoolProtocol(core, conn, self.loop, self.protocols), host, conn.port, ssl=ssl_ctx,
                    server_hostname=conn.host if ssl_ctx else None,
                    ssl_handshake_timeout=self.connect_timeout if ssl_ctx else None)
        except asyncio.CancelledError:
            self._connect_done()
            core.pool_closed(conn, "dial cancelled", monotonic())
            raise
        except Exception as exc:  # every failure is a pool failure, never ours
            self._connect_done()
            reason = describe_error(exc)
            if ssl_ctx is not None and isinstance(exc, ConnectionError) \
                    and not isinstance(exc, ConnectionRefusedError):
                # TCP was up (refused is the only connect-time ConnectionError), so the pool
                # cut the TLS handshake: say so, or it reads like a drop of a working pool
                reason = f"TLS handshake failed: {reason}"
            core.pool_closed(conn, reason, monotonic())
            return
        self._connect_done()
        if not conn.alive or transport.is_closing():
            # closed while dialing (shutdown, or the pool hung up at once)
            transport.abort()
            if conn.alive:
                core.pool_closed(conn, "connection closed by pool", monotonic())
            return
        self.protocols[conn.conn_id] = proto
        # direct writes: coalescing per loop pass measured +0.8 ms p99 at 5k shares/s
        core.pool_connected(conn, transport.write, monotonic())

    async def aclose(self) -> None:
        self._queue.clear()
        while self._closing:
            self._closing.popleft().abort()
        for task in list(self._tasks):
            task.cancel()
        for proto in list(self.protocols.values()):
            if proto.transport is not None:
                proto.transport.abort()
        self.protocols.clear()
