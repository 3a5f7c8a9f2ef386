"""The backfill controller against the simulated marketplace, with rented rigs on a sim pool."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from proxy.config import load_dict
from proxy.rental.controller import BackfillController
from proxy.rental.local import destination_for
from proxy.rental.nicehash import NiceHashProvider
from proxy.sim import SimPool, SimPoolConfig, wait_until
from proxy.sim.market import SimMarket, SimMarketConfig

RIG_HS = 2**-22 * 2**32  # one sim rig at share_interval 1 s: 1024 H/s
# market price per H/s per day; the controller thinks in BTC per PH/s per day (x 1e15)
MARKET_PRICE = Decimal("0.000000000002")
PER_PH = 10**15


def rental_config(pool_port: int, ledger: str, **overrides: Any) -> Any:
    rental = {
        "provider": "sim",
        "api_url": "http://127.0.0.1:1",
        "target_hashrate": f"{10 * RIG_HS} H/s",
        "trigger_deficit": 0.05,
        "trigger_after_s": 0.5,
        "recover_after_s": 0.5,
        "min_order_s": 0,
        "max_price": str(MARKET_PRICE * PER_PH * 2),
        "daily_budget_btc": "0.01",
        "window_s": 1.0,
        "interval_s": 0.05,
        "ledger": ledger,
        **overrides,
    }
    return load_dict(
        {
            "pools": [
                {
                    "name": "primary",
                    "url": f"stratum+tcp://127.0.0.1:{pool_port}",
                    "user": "acct.farm",
                    "password": "pool-secret",
                }
            ],
            "rental": rental,
        }
    )


@dataclass
class Farm:
    """A fake own-farm hashrate source: the test sets ``hs``; ``calls`` counts the readings
    (a running controller reads it once per control period, before deciding)."""

    hs: float | None = 10 * RIG_HS
    calls: int = 0

    async def __call__(self) -> float | None:
        self.calls += 1
        return self.hs


@dataclass
class Bench:
    market: SimMarket
    pool: SimPool
    farm: Farm
    config: Any
    ledger: str
    events: list[dict[str, Any]] = field(default_factory=list)
    controllers: list[BackfillController] = field(default_factory=list)

    def provider(self, **kw: Any) -> NiceHashProvider:
        c = self.market.config
        return NiceHashProvider(self.market.url, c.key, c.secret, c.org, backoff_s=0.02, **kw)

    def controller(self, provider: NiceHashProvider | None = None) -> BackfillController:
        dest, via = destination_for(self.config, 0)

        def sink(kind: str, reason: str, **fields: Any) -> None:
            self.events.append({"kind": kind, "reason": reason, **fields})

        ctl = BackfillController(
            self.config.rental,
            provider or self.provider(),
            self.farm,
            self.ledger,
            dest,
            events=sink,
            rented_in_source=via,
            quote_every_s=0.2,
        )
        self.controllers.append(ctl)
        return ctl

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def trigger_periods(self) -> int:
        """Control periods that outlast ``trigger_after_s`` (each one sleeps ``interval_s``):
        long enough for a deficit the controller wrongly saw to become an order."""
        rental = self.config.rental
        return math.ceil(rental.trigger_after_s / rental.interval_s) + 3

    async def control_periods(self, n: int, timeout: float = 10.0) -> None:
        """Await ``n`` whole control periods of the running controller from now: a period
        starts by reading the farm, so ``n + 1`` more readings close ``n`` periods."""
        target = self.farm.calls + n + 1
        await wait_until(lambda: self.farm.calls >= target, timeout, what=f"{n} control periods")


@pytest.fixture
def market_config() -> SimMarketConfig:
    return SimMarketConfig(
        market_price=MARKET_PRICE,
        activation_delay_s=0.2,
        min_amount=Decimal("0.0001"),
        min_limit=Decimal("100"),
        tick_s=0.05,
    )


@pytest.fixture
async def bench(tmp_path, market_config) -> AsyncIterator[Bench]:
    pool = SimPool(SimPoolConfig(name="primary", difficulty=2**-22, job_interval=30.0))
    await pool.start()
    market = SimMarket(market_config)
    await market.start()
    ledger = str(tmp_path / "ledger.sqlite3")
    b = Bench(market, pool, Farm(), rental_config(pool.port, ledger), ledger)
    try:
        yield b
    finally:
        for ctl in b.controllers:
            with contextlib.suppress(Exception):
                await ctl.stop()
        await market.stop()
        await pool.stop()
