"""max_price = "hashprice" end to end: sim pool -> proxy -> controller -> sim marketplace.

The sim pool's template decides what the hashrate earns.  While it pays less than the market
asks there is no order (and one decision event says so, with both prices); when the pool's
template pays more, the proxy's hashprice moves with the next job and the order is placed;
when it falls again, the order is lowered to the new cap.  The template values are derived
here from the wanted hashprice with the difficulty computed from the target, independently
of proxy/core/hashprice.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig
from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet

DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL
RIGS = 4
NBITS = 0x17034219  # a mainnet-sized target: difficulty ~8.6e13
MARKET_PER_HS = Decimal("0.000000000002")  # the sim market's price per H/s per day
MARKET = MARKET_PER_HS * 10**15  # = 0.002 BTC per PH/s per day


def value_for(price_per_ph_day: Decimal) -> int:
    """Coinbase satoshi that make the hashprice ``price_per_ph_day`` at NBITS."""
    target = (NBITS & 0xFFFFFF) * 256 ** ((NBITS >> 24) - 3)
    hashes_per_block = Decimal(0xFFFF * 2**208) / Decimal(target) * 2**32
    return int(price_per_ph_day * hashes_per_block / (86400 * 10**15) * 10**8)


def events(service: ProxyService, kind: str) -> list[dict[str, Any]]:
    return service.events.recent(1000, kind)


async def test_the_pools_template_value_moves_the_hashprice_and_flips_the_rental(tmp_path, monkeypatch):
    for name in ("KEY", "SECRET", "ORG"):
        monkeypatch.setenv(f"SIMMARKET_{name}", f"sim-{name.lower()}")
    low, high = value_for(MARKET / 2), value_for(MARKET * 2)
    pool = SimPool(SimPoolConfig(name="primary", difficulty=DIFF, job_interval=30.0, nbits=NBITS,
                                 coinbase_value_sat=low))
    market = SimMarket(SimMarketConfig(market_price=MARKET_PER_HS, activation_delay_s=0.2,
                                       rig_difficulty=DIFF, rig_share_interval=INTERVAL,
                                       min_amount=Decimal("0.0001"), min_limit=Decimal("100"),
                                       tick_s=0.05))
    await pool.start()
    await market.start()
    cfg = load_dict({
        "proxy": {"listen": "127.0.0.1:0"},
        "api": {"listen": "127.0.0.1:0", "token": "t"},
        "pools": [{"name": "primary", "url": f"stratum+tcp://127.0.0.1:{pool.port}", "user": "acct.farm"}],
        "rental": {
            "provider": "sim", "api_url": market.url, "key_env": "SIMMARKET_KEY",
            "secret_env": "SIMMARKET_SECRET", "org_env": "SIMMARKET_ORG",
            "target_hashrate": f"{2 * RIGS * RIG_HS} H/s",  # half of it is missing from the start
            "trigger_deficit": 0.15, "trigger_after_s": 0.3, "recover_after_s": 0.5, "min_order_s": 0,
            "max_price": "hashprice", "max_premium": 0.05,
            "daily_budget_btc": "0.01", "window_s": 1.0, "interval_s": 0.1,
            "ledger": str(tmp_path / "ledger.sqlite3"),
        },
    })
    service = ProxyService(cfg)
    await service.start()
    fleet = RigFleet("127.0.0.1", service.port, RIGS, share_interval=INTERVAL, seed=1)
    api = f"http://127.0.0.1:{service.api_port}"
    try:
        await fleet.start()
        # 1. the template pays half what the market asks: a decision, no order
        await wait_until(lambda: any(e.get("code") == "price" for e in events(service, "rental_decision")),
                         10, what="a 'price' decision")
        (refused,) = [e for e in events(service, "rental_decision") if e.get("code") == "price"]
        assert Decimal(refused["market_price"]) * 10**15 == MARKET * 10**15
        hashprice = Decimal(refused["hashprice"])
        assert abs(hashprice - MARKET / 2) <= MARKET * Decimal("1e-6")
        assert Decimal(refused["max_price"]) == (hashprice * Decimal("1.05")).quantize(Decimal("1e-8"),
                                                                                        "ROUND_DOWN")
        assert "market price" in refused["reason"] and "hashprice" in refused["reason"]
        assert not market.orders
        async with aiohttp.ClientSession() as http:
            status = await (await http.get(f"{api}/api/v1/status")).json()
            assert status["hashprice"]["pool"] == "primary"
            assert status["hashprice"]["block_value_sat"] == low
            assert status["hashprice"]["btc_per_ph_day"] == float(hashprice)

            # 2. the pool's next template pays twice the market price: the order follows
            pool.set_template(coinbase_value_sat=high)
            await wait_until(lambda: market.orders, 10, what="the backfill order")
            (placed,) = events(service, "rental_order_placed")
            assert abs(Decimal(placed["hashprice"]) - MARKET * 2) <= MARKET * Decimal("1e-6")
            assert Decimal(placed["price"]) <= Decimal(placed["max_price"])
            (order,) = market.orders.values()
            pools = (await (await http.get(f"{api}/api/v1/pools")).json())["pools"]
            assert pools[0]["hashprice"]["block_value_sat"] == high
            text = await (await http.get(f"{api}/metrics")).text()
            samples = {(s.name, s.labels.get("pool")): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            assert samples[("stratum_proxy_hashprice_btc_per_ph_day", "primary")] == \
                pools[0]["hashprice"]["btc_per_ph_day"]
            assert samples[("stratum_proxy_block_value_btc", "primary")] == high / 1e8
            assert samples[("stratum_proxy_rental_hashprice_btc", None)] == float(placed["hashprice"])

            # 3. the template falls back: the open order is lowered to the new cap
            pool.set_template(coinbase_value_sat=low)
            await wait_until(lambda: events(service, "rental_order_resized"), 10, what="the order lowered")
            (resized,) = events(service, "rental_order_resized")
            assert Decimal(resized["price"]) <= Decimal(resized["max_price"]) < MARKET
            assert order.price == Decimal(resized["price"]) / 10**15
            assert market.create_calls == 1
    finally:
        await fleet.stop()
        await service.stop()
        await market.stop()
        await pool.stop()
