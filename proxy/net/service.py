"""The running proxy: core + rig server + pool dialer + tick loop (+ the API when enabled)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import msgspec

from ..config import Config, ConfigError, load, parse_address
from ..core.coordinator import ProxyCore
from ..core.events import EventLog
from ..core.view import CoreView
from ..listeners import for_listener, resolve, split_dialects
from .client import Dialer
from .eth_service import EthListenerService, start_dual
from .proxyproto import ProxyProtocolPolicy
from .server import RigProtocol, wait_closed
from .ticker import Ticker

log = logging.getLogger("proxy.service")

DRAIN_POLL_S = 0.01


def tune_gc() -> None:
    """Fewer, cheaper garbage collections: the proxy allocates an object or two per share
    and almost never a cycle, and a full collection over 10,000 rigs' objects took 200-475 ms
    of stalled loop in the failover benchmark.  Objects alive at start are frozen out of it."""
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()


class ProxyService:
    def __init__(self, config: Config, *, prefix_start: int = 0, resolver: Any = None,
                 with_api: bool | None = None) -> None:
        self.config = config
        self.prefix_start = prefix_start
        self.resolver = resolver
        self.with_api = config.api.enabled if with_api is None else with_api
        self.core: ProxyCore | None = None
        self.view: CoreView | None = None  # what the API, store, rental and demo read
        self.events = EventLog()  # the event bus: the core publishes, the outer layers listen
        self.dialer: Dialer | None = None
        self.server: asyncio.Server | None = None
        self.api_runner: Any = None
        self.api_port = 0
        self.port = 0
        self.ticker: Ticker | None = None
        self._stopped = asyncio.Event()
        self.stopping = False
        self.rental: Any = None  # proxy.rental.controller.BackfillController when [rental] is set
        self.cluster: Any = None  # proxy.cluster.node.ClusterNode when [cluster] is set
        # GPU listeners (EthereumStratum/1.0.0), each with its own core; and every rig port by
        # listener name ("main" is [proxy] listen)
        self.gpu: dict[str, EthListenerService] = {}
        self.ports: dict[str, int] = {}
        self.power: Any = None  # proxy.power.monitor.PowerMonitor when [power] is set

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tune_gc()
        self.dialer = Dialer(loop, self.config.proxy.connect_timeout_s, self.resolver)
        now = time.monotonic()
        from ..store.history import remembered_extranonce2_sizes

        remembered = remembered_extranonce2_sizes(self.config.proxy.history_db)
        listeners = resolve(self.config)
        sv1 = next((x for x in listeners if x.protocol == "sv1"), None)
        self.core = ProxyCore(self._sv1_config(self.config), self.dialer, now, wall_offset=time.time() - now,
                              prefix_start=self.prefix_start, events=self.events,
                              remembered_layout=remembered)
        self.view = CoreView(self.core)
        # the dial tasks the core started in __init__ run only after this line
        self.dialer.core = self.core
        self.ticker = Ticker(self.core.tick, "core")
        self.dialer.on_wake = self.ticker.wake
        core = self.core
        settings = self.config.proxy
        policy = (None if settings.proxy_protocol == "off" else
                  ProxyProtocolPolicy(int(settings.proxy_protocol[1]), settings.trusted_proxies))
        host, port = "", 0
        if sv1 is not None:
            host, port = parse_address(sv1.listen, sv1.where.replace("protocol", "listen"))
            self.server = await loop.create_server(lambda: RigProtocol(core, loop, policy), host, port,
                                                   backlog=4096, reuse_address=True,
                                                   reuse_port=self.config.proxy.reuse_port or None)
            self.ports[sv1.name] = self.server.sockets[0].getsockname()[1]
        for listener in listeners:
            if listener.protocol in ("ethstratum", "ethproxy"):
                gpu = self.gpu[listener.name] = EthListenerService(listener, self.config, self.events,
                                                                   self.resolver)
                await gpu.start()
                self.ports[listener.name] = gpu.port
            elif listener.protocol == "eth":  # both GPU dialects on one port
                halves, self.ports[listener.name] = await start_dual(listener, self.config, self.events,
                                                                     self.resolver)
                self.gpu.update((half.name, half) for half in halves)
        self.port = self.ports[listeners[0].name]
        self.ticker.start(now)
        if self.config.cluster is not None:  # before the API: it serves the farm routes
            from ..cluster.node import ClusterNode

            self.cluster = ClusterNode(self, self.config.cluster)
        if self.with_api:
            from ..api.app import start_api

            self.api_runner, self.api_port = await start_api(self)
        if self.config.power is not None:  # before the controller: it plans with it
            from ..power.monitor import start_for_service as start_power

            self.power = await start_power(self)
        if self.cluster is not None:  # the farm's settings, registration; the leader rents
            await self.cluster.start()
        elif self.config.rental is not None:
            from ..rental.local import start_for_service

            self.rental = await start_for_service(self)
        log.info("listening for rigs on %s:%d", host, self.port)

    @staticmethod
    def _sv1_config(config: Config) -> Config:
        """What the SV1 core sees: the whole config when there is only the SV1 main
        listener, else only the pools of the SV1 listener (none if there is none)."""
        if not config.listeners and config.proxy.protocol == "sv1":
            return config
        sv1 = next((x for x in resolve(config) if x.protocol == "sv1"), None)
        return msgspec.structs.replace(config, pools=list(sv1.pools) if sv1 is not None else [])

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
        result = self.core.operator.apply_config(self._sv1_config(new), self.now())
        self._reload_gpu(new, result)
        self.config.pools = new.pools
        if self.power is not None and new.power is not None:
            result["power"] = self.power.apply(new.power)
            self.config.power = new.power
        elif (self.power is None) != (new.power is None):
            log.warning("adding or removing [power] needs a restart")
        if self.cluster is not None:
            self.cluster.settings.reapply()  # the farm's settings in etcd win over the file's
        if new.api.token != self.config.api.token:
            self.config.api.token = new.api.token  # takes effect on the next API write
            result["api_token"] = ["changed"]
        return result

    def _reload_gpu(self, new: Config, result: dict[str, list[str]]) -> None:
        """Each GPU listener takes its pools' changes (added, removed, changed pools); a new or
        removed listener, or another address, needs a restart."""
        listeners = {half.name: half for x in resolve(new) for half in split_dialects(x)}
        for name, gpu in self.gpu.items():
            listener = listeners.get(name)
            if (listener is None or listener.protocol != gpu.listener.protocol
                    or listener.listen != gpu.listener.listen):
                log.warning("listener %s: removed, moved or changed protocol: needs a restart", name)
                continue
            assert gpu.core is not None
            for key, names in gpu.core.operator.apply_config(for_listener(new, listener), self.now()).items():
                result.setdefault(key, []).extend(names)

    def in_flight_shares(self) -> int:
        """Shares forwarded to a live pool connection and not answered yet."""
        return 0 if self.view is None else self.view.in_flight_shares()

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting rigs, close them (behind a load balancer they reconnect to another
        instance), give the pools up to ``drain_s`` to answer the shares already forwarded
        (SIGTERM passes ``proxy.shutdown_drain_s``), then close the pools; the history
        recorder's last flush comes after the core's final counts."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        if self.cluster is not None:  # leaves the farm: the lease is revoked, another instance leads
            await self.cluster.stop()
            self.cluster = None
        if self.rental is not None:  # stops deciding; an open order stays and is adopted on restart
            await self.rental.stop()
            self.rental = None
        if self.power is not None:
            await self.power.stop()
            self.power = None
        if self.core is not None:
            # every submit a rig sent has been answered already (the proxy answers after its
            # own check); closing the rigs first means no new shares keep the drain open
            self.core.close_all_rigs("proxy shutting down", self.now())
            if drain_s > 0:
                await self._drain_in_flight(drain_s)
        if self.ticker is not None:
            self.ticker.stop()
        if self.core is not None:
            self.core.shutdown(self.now())
        for gpu in self.gpu.values():
            await gpu.stop(drain_s)
        if self.api_runner is not None:
            await self.api_runner.cleanup()
        if self.dialer is not None:
            await self.dialer.aclose()
        await wait_closed(self.server)
        self._stopped.set()

    async def _drain_in_flight(self, drain_s: float) -> None:
        started = time.monotonic()
        waiting = self.in_flight_shares()
        log.info("stopping: rig port closed, rigs closed; waiting up to %gs for %d in-flight shares",
                 drain_s, waiting)
        while self.in_flight_shares() and time.monotonic() - started < drain_s:
            await asyncio.sleep(DRAIN_POLL_S)
        left = self.in_flight_shares()
        log.info("drain done in %.3fs: %d in-flight shares answered by the pools, %d unanswered "
                 "(counted lost: proxy shutting down)", time.monotonic() - started,
                 max(waiting - left, 0), left)
