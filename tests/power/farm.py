"""A farm for the power tests: a sim pool, the sim marketplace, the proxy (API on) with
``[rental]`` (rented rigs come through the proxy) and ``[power]`` pointing at a NUT server,
rigs that stay and rigs fed by the UPS under test.  The proxy can be restarted on the same
ports and ledger (rigs reconnect by themselves), as a crash or an upgrade would."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import RigFleet, SimPool, SimPoolConfig, wait_until
from proxy.sim.market import SimMarket, SimMarketConfig, SimOrder

from .upsd_fixture import free_port

DIFF = 2**-22
INTERVAL = 0.1
RIG_HS = DIFF * 2**32 / INTERVAL  # 10,240 H/s
STAY, AT_RISK = 12, 6
TARGET = (STAY + AT_RISK) * RIG_HS
TOKEN = "power-token"


@dataclass
class PowerFarm:
    tmp: Path
    nut_target: str  # ups@host:port
    rack: str  # worker prefix of the rigs the UPS feeds
    power: dict[str, Any] = field(default_factory=dict)
    pool: SimPool | None = None
    market: SimMarket | None = None
    service: ProxyService | None = None
    fleets: list[RigFleet] = field(default_factory=list)
    at_risk: RigFleet | None = None
    port: int = 0
    services: int = 0

    def config(self) -> Any:
        assert self.pool is not None and self.market is not None
        power = {"order_lead_s": 10, "runtime_margin_s": 2,
                 "curtailments_file": str(self.tmp / "curtail.json"),
                 "ups": [{"name": "ups", "nut": self.nut_target, "workers": [f"{self.rack}.*"],
                          "poll_s": 0.1, "timeout_s": 0.5}], **self.power}
        return load_dict({
            "proxy": {"listen": f"127.0.0.1:{self.port}"},
            "api": {"listen": "127.0.0.1:0", "token": TOKEN},
            "pools": [{"name": "primary", "url": f"stratum+tcp://127.0.0.1:{self.pool.port}",
                       "user": "acct"}],
            "rental": {
                "provider": "sim", "api_url": self.market.url, "target_hashrate": f"{TARGET} H/s",
                "trigger_deficit": 0.15, "trigger_after_s": 60, "recover_after_s": 0.3, "min_order_s": 0,
                "max_price": "4000", "daily_budget_btc": "0.01", "window_s": 0.5, "interval_s": 0.1,
                "pool": "@proxy", "public_address": f"127.0.0.1:{self.port}",
                "ledger": str(self.tmp / "ledger.sqlite3"),
            },
            "power": power,
        })

    async def start(self) -> None:
        self.pool = SimPool(SimPoolConfig(name="primary", difficulty=DIFF, job_interval=30.0))
        await self.pool.start()
        self.market = SimMarket(SimMarketConfig(
            market_price=Decimal("0.000000000002"), activation_delay_s=0.2, rig_difficulty=DIFF,
            rig_share_interval=INTERVAL, min_amount=Decimal("0.0001"), min_limit=Decimal("100"), tick_s=0.05))
        await self.market.start()
        self.port = free_port()
        await self.start_proxy()
        stay = RigFleet("127.0.0.1", self.port, STAY, share_interval=INTERVAL, seed=1, worker_prefix="farm",
                        reconnect_delay=0.2)
        self.fleets.append(stay)
        await stay.start()
        await self.rigs_on_ups()
        await self.warm()

    async def rigs_on_ups(self) -> RigFleet:
        fleet = RigFleet("127.0.0.1", self.port, AT_RISK, share_interval=INTERVAL, seed=len(self.fleets) + 1,
                         worker_prefix=self.rack, reconnect_delay=0.2)
        self.fleets.append(fleet)
        self.at_risk = fleet
        await fleet.start()
        return fleet

    async def rigs_die(self) -> None:
        assert self.at_risk is not None
        await self.at_risk.stop()

    async def start_proxy(self) -> None:
        self.service = ProxyService(self.config())
        await self.service.start()
        self.services += 1

    async def restart(self) -> None:
        """Stop the proxy (the order stays open at the marketplace) and start it again."""
        assert self.service is not None
        await self.service.stop()
        await self.start_proxy()
        await wait_until(lambda: self.ctl.reconciled, 5, what="the ledger reconciled")
        await self.warm()

    async def warm(self) -> None:
        """The farm delivers its target, and the proxy measures the UPS's rigs at their rate
        (a rig's meter reads low for its first second or two)."""
        await wait_until(lambda: self.ctl.delivered_hs is not None and self.ctl.delivered_hs > 0.85 * TARGET
                         and self.measured_at_risk() > 0.8 * AT_RISK * RIG_HS, 10, what="the farm at target")

    def measured_at_risk(self) -> float:
        assert self.service is not None and self.service.view is not None
        return sum(h for _, workers, _, h in self.service.view.rig_figures(self.service.now())
                   if any(w.startswith(f"{self.rack}.") for w in workers))

    @property
    def ctl(self) -> Any:
        assert self.service is not None and self.service.rental is not None
        return self.service.rental

    def events(self, kind: str) -> list[dict[str, Any]]:
        assert self.service is not None
        return self.service.events.recent(kind=kind)

    def decisions(self) -> list[str]:
        return [e["decision"] for e in self.events("power_decision") if e.get("ups") == "ups"]

    def orders(self) -> list[SimOrder]:
        assert self.market is not None
        return list(self.market.orders.values())

    def rigs_on_ups_connected(self) -> int:
        assert self.service is not None and self.service.view is not None
        return self.service.view.rigs(self.service.now(), 0, 1000, needle=f"{self.rack}.")[0]

    async def control_periods(self, n: int) -> None:
        """Await ``n`` decisions of the controller (one per ``interval_s``)."""
        seen: list[Any] = []

        def counted() -> bool:
            t = (self.ctl.last_decision or {}).get("time")
            if not seen or seen[-1] != t:
                seen.append(t)
            return len(seen) > n

        await wait_until(counted, 10, what=f"{n} control periods", poll=0.01)

    async def api(self, method: str, path: str, body: Any = None,
                  token: str | None = TOKEN) -> tuple[int, Any]:
        assert self.service is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http, http.request(
                method, f"http://127.0.0.1:{self.service.api_port}{path}", json=body, headers=headers) as r:
            return r.status, await r.json()

    async def stop(self) -> None:
        for item in (*self.fleets, self.service, self.market, self.pool):
            if item is not None:
                with contextlib.suppress(Exception):
                    await item.stop()
