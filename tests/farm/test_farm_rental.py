"""The farm rents once for all instances: rigs fail on both, exactly one backfill order."""

from __future__ import annotations

from decimal import Decimal

import aiohttp

from proxy.farm.config import load_farm_dict
from proxy.farm.service import FarmService
from proxy.sim import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig

from .conftest import TOKEN

DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL  # 4096 H/s per sim rig
PER_INSTANCE = 12


async def test_rig_failure_on_both_instances_places_one_order(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_SIM_KEY", "sim-key")
    monkeypatch.setenv("FARM_SIM_SECRET", "sim-secret")
    monkeypatch.setenv("FARM_SIM_ORG", "sim-org")
    pool = await cluster.pool("primary", difficulty=DIFF)
    market = SimMarket(SimMarketConfig(market_price=Decimal("0.000000000002"), activation_delay_s=0.2,
                                       rig_difficulty=DIFF, rig_share_interval=INTERVAL,
                                       min_amount=Decimal("0.0001"), min_limit=Decimal("100"), tick_s=0.05))
    await market.start()
    farm = None
    try:
        one = await cluster.instance("proxy-1")
        two = await cluster.instance("proxy-2")
        stay = [await cluster.start_fleet(PER_INSTANCE * 2 // 3, port=svc.port, share_interval=INTERVAL,
                                    worker_prefix=f"stay{i}") for i, svc in enumerate((one, two))]
        doomed = [await cluster.start_fleet(PER_INSTANCE // 3, port=svc.port, share_interval=INTERVAL,
                                      worker_prefix=f"doomed{i}") for i, svc in enumerate((one, two))]
        target = 2 * PER_INSTANCE * RIG_HS
        config = load_farm_dict({
            "farm": {"listen": "127.0.0.1:0", "token": "farm-token", "poll_s": 0.2, "retry_s": 0.3},
            "instances": [{"name": n, "api": f"http://127.0.0.1:{s.api_port}", "token": TOKEN}
                          for n, s in (("proxy-1", one), ("proxy-2", two))],
            "pools": [{"name": "primary", "url": f"stratum+tcp://127.0.0.1:{pool.port}",
                       "user": "acct.farm"}],
            "rental": {"provider": "sim", "api_url": market.url, "key_env": "FARM_SIM_KEY",
                       "secret_env": "FARM_SIM_SECRET", "org_env": "FARM_SIM_ORG",
                       "target_hashrate": f"{target} H/s", "trigger_deficit": 0.15, "trigger_after_s": 0.5,
                       "recover_after_s": 0.5, "min_order_s": 0, "max_price": "4000",
                       "daily_budget_btc": "0.01", "window_s": 2.0, "interval_s": 0.1, "pool": "primary",
                       "ledger": str(tmp_path / "farm-ledger.sqlite3")},
        })
        farm = FarmService(config)
        await farm.start()
        ctl = farm.rental
        assert ctl is not None and not ctl.rented_in_source
        # the instances have no [rental]: the farm is the only one that can rent
        assert one.rental is None and two.rental is None
        await wait_until(lambda: ctl.delivered_hs is not None and ctl.delivered_hs > 0.85 * target, 10,
                         what="the farm measured at target")
        assert not market.orders
        for fleet in doomed:  # a third of the rigs die, on both instances
            await fleet.stop()
        await wait_until(lambda: market.orders, 10, what="the backfill order")
        (order,) = market.orders.values()
        deficit = target / 3
        assert 0.6 * deficit <= float(order.limit) <= 1.6 * deficit, (order.limit, deficit)
        (dest,) = market.pools.values()
        assert (dest.host, dest.port, dest.username) == ("127.0.0.1", pool.port, "acct.farm")
        # the rented rigs deliver to the pool and the farm counts them: no second order
        await wait_until(lambda: order.delivered_hs > 0 and ctl.delivered_hs is not None
                         and ctl.delivered_hs >= 0.85 * target, 10, what="delivered back at target")
        await farm.wait_polled(5, 10)
        assert market.create_calls == 1 and len(market.orders) == 1
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{farm.api_port}/api/v1/rentals") as resp:
            view = await resp.json()
        assert view["state"] == "renting" and view["orders"][0]["id"] == order.id
        assert sorted(view["instances"]) == ["proxy-1", "proxy-2"]
        placed = [e for e in farm.events.recent(200) if e["kind"] == "rental_order_placed"]
        assert len(placed) == 1 and placed[0]["instance"] == "farm"
        # the farm decided with the hashprice its instances read from the pool's jobs
        earns = one.view.hashprice(one.now())["btc_per_ph_day"]
        assert earns is not None and Decimal(placed[0]["hashprice"]) == Decimal(repr(earns))
        assert view["hashprice"] == placed[0]["hashprice"] and view["max_price"] == "4000"
        assert all(f.disconnects == 0 for f in stay)
    finally:
        if farm is not None:
            await farm.stop()
        await market.stop()
