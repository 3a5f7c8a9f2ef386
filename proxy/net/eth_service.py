"""A GPU listener in the running proxy: an ``EthCore`` with its own rig port, pool dialer
and timer, publishing to the service's event bus.  The glue is the SV1 glue
(``RigProtocol``, ``Dialer``): the core offers the same entry points."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import Config, parse_address
from ..core.dialects import DialectRouter
from ..core.eth_core import EthCore
from ..core.eth_view import EthView
from ..core.ethproxy_core import EthProxyCore
from ..core.events import EventLog
from ..listeners import Listener, for_listener, split_dialects
from .client import Dialer
from .proxyproto import ProxyProtocolPolicy
from .server import RigProtocol, wait_closed
from .ticker import Ticker

log = logging.getLogger("proxy.service")

DRAIN_POLL_S = 0.01


class EthListenerService:
    """One ``[[listeners]]`` entry (or the main listener) for GPU rigs: EthereumStratum/1.0.0
    (``EthCore``) or the getwork dialect (``EthProxyCore``)."""

    def __init__(self, listener: Listener, config: Config, events: EventLog, resolver: Any = None,
                 serve: bool = True) -> None:
        self.listener = listener
        self.serve = serve  # False: half of an "eth" listener, whose port ``start_dual`` opens
        self.config = for_listener(config, listener)
        self.events = events
        self.resolver = resolver
        self.core: EthCore | None = None
        self.view: EthView | None = None  # what the API, metrics and tests read
        self.dialer: Dialer | None = None
        self.server: asyncio.Server | None = None
        self.port = 0
        self.ticker: Ticker | None = None

    @property
    def name(self) -> str:
        """The listener's name from the config."""
        return self.listener.name

    async def start(self) -> None:
        """Dial the pools, open the rig port, start the timer."""
        loop = asyncio.get_running_loop()
        settings = self.config.proxy
        self.dialer = Dialer(loop, settings.connect_timeout_s, self.resolver)
        now = time.monotonic()
        kind = EthProxyCore if self.listener.protocol == "ethproxy" else EthCore
        self.core = core = kind(self.config, self.dialer, now, listener=self.name,
                                wall_offset=time.time() - now, events=self.events)
        self.view = EthView(core)
        self.dialer.core = core  # type: ignore[assignment]  # same entry points as ProxyCore
        self.ticker = Ticker(core.tick, f"eth listener {self.name}")
        self.dialer.on_wake = self.ticker.wake
        if self.serve:
            self.server, self.port = await open_port(self.listener, settings, core)
        self.ticker.start(now)
        log.info("GPU rigs (%s) on %s, listener %s", core.PROTOCOL, self.listener.listen, self.name)

    def in_flight_shares(self) -> int:
        """Shares forwarded and not answered yet."""
        core = self.core
        return 0 if core is None else sum(p.shares_in_flight() for p in core.pools.values())

    async def stop(self, drain_s: float = 0.0) -> None:
        """Close the port and the rigs, let the pools answer what is in flight, close the pools."""
        if self.server is not None:
            self.server.close()
        core = self.core
        if core is not None:
            core.close_all_rigs("proxy shutting down", time.monotonic())
            started = time.monotonic()
            while drain_s > 0 and self.in_flight_shares() and time.monotonic() - started < drain_s:
                await asyncio.sleep(DRAIN_POLL_S)
        if self.ticker is not None:
            self.ticker.stop()
        if core is not None:
            core.shutdown(time.monotonic())
        if self.dialer is not None:
            await self.dialer.aclose()
        await wait_closed(self.server)


async def open_port(listener: Listener, settings: Any, core: Any) -> tuple[asyncio.Server, int]:
    """The listener's rig port, each connection fed to ``core`` (a core, or a DialectRouter)."""
    loop = asyncio.get_running_loop()
    policy = (None if settings.proxy_protocol == "off" else
              ProxyProtocolPolicy(int(settings.proxy_protocol[1]), settings.trusted_proxies))
    host, port = parse_address(listener.listen, listener.where.replace("protocol", "listen"))
    # reuse_port: several instances share the port (SO_REUSEPORT), as the SV1 one
    server = await loop.create_server(lambda: RigProtocol(core, loop, policy),  # type: ignore[arg-type]
                                      host, port, backlog=4096, reuse_address=True,
                                      reuse_port=settings.reuse_port or None)
    return server, server.sockets[0].getsockname()[1]


async def start_dual(listener: Listener, config: Config, events: EventLog,
                     resolver: Any = None) -> tuple[list[EthListenerService], int]:
    """An "eth" listener: a core per dialect (the halves, each on its own pools) behind one
    port, where each rig's first request picks its core (``core.dialects.DialectRouter``)."""
    halves = [EthListenerService(half, config, events, resolver, serve=False)
              for half in split_dialects(listener)]
    for half in halves:
        await half.start()
    cores = {half.listener.protocol: half.core for half in halves}
    router = DialectRouter(cores.get("ethstratum"), cores.get("ethproxy"), config.proxy.max_line_bytes)
    server, port = await open_port(listener, config.proxy, router)
    halves[0].server = server  # closed by its stop()
    for half in halves:
        half.port = port
    log.info("GPU rigs of either dialect on %s:%d (listener %s)", listener.listen, port, listener.name)
    return halves, port
