"""End to end: proxy + sim pool + rigs + sim marketplace; rented rigs come through the proxy.

A third of the farm dies, the backfill order appears, the proxy's own measurement of delivered
hashrate recovers to the target, the rigs return, the order is cancelled; the API and /metrics
show it all.
"""

from __future__ import annotations

from decimal import Decimal

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet
from tests.rental.flow import backfill_market, rigs_die_and_are_backfilled

DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL  # 4096 H/s
RIGS = 24


async def test_rig_failure_is_backfilled_through_the_proxy(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMMARKET_KEY", "sim-key")
    monkeypatch.setenv("SIMMARKET_SECRET", "sim-secret")
    monkeypatch.setenv("SIMMARKET_ORG", "sim-org")
    pool = SimPool(SimPoolConfig(name="primary", difficulty=DIFF, job_interval=30.0))
    market = backfill_market(DIFF, INTERVAL)
    await pool.start()
    await market.start()
    cfg = load_dict(
        {
            "proxy": {"listen": "127.0.0.1:0"},
            "api": {"listen": "127.0.0.1:0", "token": "t"},
            "pools": [
                {"name": "primary", "url": f"stratum+tcp://127.0.0.1:{pool.port}", "user": "acct.farm"}
            ],
            "rental": {
                "provider": "sim",
                "api_url": market.url,
                "key_env": "SIMMARKET_KEY",
                "secret_env": "SIMMARKET_SECRET",
                "org_env": "SIMMARKET_ORG",
                "target_hashrate": f"{RIGS * RIG_HS} H/s",
                "trigger_deficit": 0.15,
                "trigger_after_s": 0.5,
                "recover_after_s": 0.5,
                "min_order_s": 0,
                "max_price": "4000",
                "daily_budget_btc": "0.01",
                "window_s": 2.0,
                "interval_s": 0.1,
                "pool": "@proxy",
                "public_address": "127.0.0.1:0",
                "ledger": str(tmp_path / "ledger.sqlite3"),
            },
        }
    )
    service = ProxyService(cfg)
    await service.start()
    stay = RigFleet("127.0.0.1", service.port, RIGS * 2 // 3, share_interval=INTERVAL, seed=1)
    doomed = RigFleet(
        "127.0.0.1", service.port, RIGS // 3, share_interval=INTERVAL, seed=2, worker_prefix="doomed"
    )
    back: RigFleet | None = None
    ctl = service.rental
    api = f"http://127.0.0.1:{service.api_port}"
    try:
        assert ctl is not None and ctl.rented_in_source
        await stay.start()
        await doomed.start()
        order = await rigs_die_and_are_backfilled(ctl, market, doomed, RIGS * RIG_HS, service.port)
        async with aiohttp.ClientSession() as http:
            view = await (await http.get(f"{api}/api/v1/rentals")).json()
            assert view["enabled"] and view["provider"] == "nicehash" and view["state"] == "renting"
            assert view["orders"][0]["id"] == order.id and view["orders"][0]["state"] in ("PENDING", "ACTIVE")
            assert view["target_hs"] == RIGS * RIG_HS and view["last_decision"]["action"]
            assert Decimal(view["budget_left_btc"]) <= Decimal("0.01") - Decimal(
                view["orders"][0]["amount_btc"]
            )
            text = await (await http.get(f"{api}/metrics")).text()
            samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
            assert samples["stratum_proxy_rental_ordered_hashrate"] == float(order.limit)
            assert samples["stratum_proxy_rental_budget_left_btc"] == float(view["budget_left_btc"])
            assert "stratum_proxy_rental_spent_btc_total" in samples
            assert "stratum_proxy_rental_delivered_hashrate" in samples
            # what the alert rules compare: the order's price with max_price, the budget left with the budget
            price = float(Decimal(view["orders"][0]["price"]))
            assert samples["stratum_proxy_rental_order_price_btc"] == price
            assert samples["stratum_proxy_rental_max_price_btc"] == 4000.0
            assert samples["stratum_proxy_rental_budget_btc"] == 0.01
            assert samples["stratum_proxy_rental_farm_hashrate"] > 0.5 * RIGS * RIG_HS
            back = RigFleet(
                "127.0.0.1", service.port, RIGS // 3, share_interval=INTERVAL, seed=3, worker_prefix="back"
            )
            await back.start()  # the rigs return
            await wait_until(lambda: order.state == "CANCELLED", 12, what="the order cancelled")
            assert market.create_calls == 1
            events = (await (await http.get(f"{api}/api/v1/events?kind=rental_order_cancelled")).json())[
                "events"
            ]
            assert events and "recovered" in events[0]["reason"]
            placed = (await (await http.get(f"{api}/api/v1/events?kind=rental_order_placed")).json())[
                "events"
            ]
            assert len(placed) == 1 and "deficit" in placed[0]["reason"]
    finally:
        for fleet in (stay, doomed, back):
            if fleet is not None:
                await fleet.stop()
        await service.stop()
        await market.stop()
        await pool.stop()
    assert stay.disconnects == 0
