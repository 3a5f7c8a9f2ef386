"""Real sockets on loopback: sim pools, the proxy service, a sim rig fleet."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet


class Farm:
    """Pools + proxy + fleet, torn down in reverse order."""

    def __init__(self) -> None:
        self.pools: dict[str, SimPool] = {}
        self.proxy: ProxyService | None = None
        self.fleets: list[RigFleet] = []

    async def pool(self, name: str, **kwargs: Any) -> SimPool:
        kwargs.setdefault("difficulty", 2**-24)
        kwargs.setdefault("job_interval", 30.0)
        pool = SimPool(SimPoolConfig(name=name, **kwargs))
        await pool.start()
        self.pools[name] = pool
        return pool

    async def start_proxy(self, pools: list[dict[str, Any]] | None = None, prefix_start: int = 0,
                          **proxy: Any) -> ProxyService:
        if pools is None:
            pools = [{"name": name, "priority": i} for i, name in enumerate(self.pools)]
        entries = []
        for p in pools:
            sim = self.pools[p["name"]]
            entries.append({"url": f"stratum+tcp://127.0.0.1:{sim.port}", "user": "farm", **p})
        proxy.setdefault("listen", "127.0.0.1:0")
        cfg = load_dict({"proxy": proxy, "api": {"enabled": False}, "pools": entries})
        self.proxy = ProxyService(cfg, prefix_start=prefix_start)
        await self.proxy.start()
        return self.proxy

    async def fleet(self, count: int, **kwargs: Any) -> RigFleet:
        assert self.proxy is not None
        kwargs.setdefault("share_interval", 0.5)
        kwargs.setdefault("seed", len(self.fleets) + 1)
        fleet = RigFleet("127.0.0.1", self.proxy.port, count, **kwargs)
        self.fleets.append(fleet)
        await fleet.start()
        await fleet.wait_until(lambda: fleet.authorized == count, 20, f"{count} rigs authorized")
        return fleet

    async def close(self) -> None:
        for fleet in self.fleets:
            with contextlib.suppress(Exception):
                await fleet.stop()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                await self.proxy.stop()
        for pool in self.pools.values():
            with contextlib.suppress(Exception):
                await pool.stop()


@pytest.fixture
async def farm():
    f = Farm()
    try:
        yield f
    finally:
        await asyncio.wait_for(f.close(), 15)


def pool_view(proxy: ProxyService, name: str) -> dict[str, Any]:
    assert proxy.view is not None
    return proxy.view.pool(name, proxy.now())
