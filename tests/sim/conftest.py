"""Pools and fleets for the simulator tests, stopped after each test."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.sim import RigFleet, SimPool, SimPoolConfig

PoolFactory = Callable[..., Awaitable[SimPool]]
FleetFactory = Callable[..., Awaitable[RigFleet]]
D = 2.0 ** -24  # ~256 hashes per share: cheap for Python rigs, many shares per second


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    pools: list[SimPool] = []

    async def make(name: str = "p1", **kwargs: Any) -> SimPool:
        kwargs.setdefault("seed", len(pools) + 1)
        pool = SimPool(SimPoolConfig(name=name, **kwargs))
        await pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await asyncio.wait_for(pool.stop(), 5)


@pytest.fixture
async def make_fleet() -> AsyncIterator[FleetFactory]:
    """``make_fleet(pool, count, authorized=True, **RigFleet kwargs)``: started, and (unless
    ``authorized`` is False: rigs that may refuse the pool) every rig authorized."""
    fleets: list[RigFleet] = []

    async def make(pool: SimPool, count: int, authorized: bool = True,
                   **kwargs: Any) -> RigFleet:
        kwargs.setdefault("seed", 100 + len(fleets))
        kwargs.setdefault("share_interval", 0.2)
        fleet = RigFleet("127.0.0.1", pool.port, count, **kwargs)
        fleets.append(fleet)
        await fleet.start()
        if authorized:
            await fleet.wait_until(lambda: fleet.authorized == count, 5, f"{count} rigs authorized")
        return fleet

    yield make
    for fleet in fleets:
        await asyncio.wait_for(fleet.stop(), 5)


@pytest.fixture
def pool_at_d(make_pool: PoolFactory) -> PoolFactory:
    """``make_pool`` at difficulty D unless told otherwise."""
    return functools.partial(make_pool, difficulty=D)
