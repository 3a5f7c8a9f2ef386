"""The running proxy: core + rig server + pool dialer + tick loop (+ the API when enabled)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import Config, ConfigError, load, parse_address
from ..core.engine import ProxyCore
from .client import Dialer
from .server import RigProtocol

log = logging.getLogger("proxy.service")

TICK_S = 0.05


class ProxyService:
    def __init__(self, config: Config, *, prefix_start: int = 0, resolver: Any = None,
                 with_api: bool | None = None) -> None:
        self.config = config
        self.prefix_start = prefix_start
        self.resolver = resolver
        self.with_api = config.api.enabled if with_api is None else with_api
        self.core: ProxyCore | None = None
        self.dialer: Dialer | None = None
        self.server: asyncio.Server | None = None
        self.api_runner: Any = None
        self.api_port = 0
        self.port = 0
        self._tick_task: asyncio.Task | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.dialer = Dialer(loop, self.config.proxy.connect_timeout_s, self.resolver)
        now = time.monotonic()
        self.core = ProxyCore(self.config, self.dialer, now, wall_offset=time.time() - now,
                              prefix_start=self.prefix_start)
        # the dial tasks the core started in __init__ run only after this line
        self.dialer.core = self.core
        host, port = parse_address(self.config.proxy.listen, "proxy.listen")
        core = self.core
        self.server = await loop.create_server(lambda: RigProtocol(core, loop), host, port,
                                               backlog=4096, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        self._tick_task = loop.create_task(self._tick_loop())
        if self.with_api:
            from ..api.app import start_api

            self.api_runner, self.api_port = await start_api(self)
        log.info("listening for rigs on %s:%d", host, self.port)

    async def _tick_loop(self) -> None:
        assert self.core is not None
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.core.tick(time.monotonic())
            except Exception:
                log.exception("tick failed")

    def now(self) -> float:
        # uvloop's loop.time() has 1 ms resolution: too coarse for share latency
        return time.monotonic()

    def reload(self, path: str | None = None) -> dict[str, list[str]]:
        """Validate the file first; a bad one raises ConfigError and nothing changes."""
        path = path or self.config.path
        if not path:
            raise ConfigError("no config file to reload (the proxy was started without one)")
        new = load(path)
        if new.proxy.listen != self.config.proxy.listen:
            log.warning("proxy.listen changes need a restart; keeping %s", self.config.proxy.listen)
        assert self.core is not None
        result = self.core.apply_config(new, self.now())
        self.config.pools = new.pools
        if new.api.token != self.config.api.token:
            self.config.api.token = new.api.token  # takes effect on the next API write
            result["api_token"] = ["changed"]
        return result

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self._tick_task is not None:
            self._tick_task.cancel()
        if self.api_runner is not None:
            await self.api_runner.cleanup()
        if self.core is not None:
            self.core.shutdown(self.now())
            for rig in list(self.core.rigs.values()):
                self.core.close_rig(rig, "proxy shutting down", self.now())
        if self.dialer is not None:
            await self.dialer.aclose()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                pass
        self._stopped.set()
