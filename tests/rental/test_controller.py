"""The controller against the simulated marketplace: real HTTP, real signing, rented rigs on a sim pool."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from proxy.sim import wait_until

from .conftest import MARKET_PRICE, PER_PH, RIG_HS


async def test_deficit_rents_one_order_of_the_right_size_then_cancels_on_recovery(bench):
    market, farm = bench.market, bench.farm
    ctl = bench.controller()
    await ctl.start()
    await wait_until(lambda: ctl.last_action is not None and ctl.last_action.code == "ok", 5, what="steady")
    loop = asyncio.get_running_loop()
    farm.hs = 7 * RIG_HS  # a third of the farm's 10 rigs die (well, 3 of 10)
    t_fail = loop.time()
    await wait_until(lambda: market.orders, 5, what="an order at the marketplace")
    elapsed = loop.time() - t_fail
    assert 0.5 <= elapsed <= 2.0, elapsed  # trigger_after_s = 0.5
    (order,) = market.orders.values()
    assert float(order.limit) == pytest.approx(3 * RIG_HS, rel=0.01)
    assert order.price == MARKET_PRICE <= Decimal(bench.config.rental.max_price) / PER_PH
    # the order really delivers: sim rigs connect to the pool and their shares arrive there
    await wait_until(
        lambda: order.state == "ACTIVE" and order.delivered_hs >= 3 * RIG_HS * 0.99,
        10,
        what="the order delivering",
    )
    shares_before = len(bench.pool.shares)
    await wait_until(
        lambda: ctl.delivered_hs is not None and ctl.delivered_hs >= 9.9 * RIG_HS,
        5,
        what="delivered back at target",
    )
    await bench.pool.wait_until(lambda: len(bench.pool.shares) >= shares_before + 3, 10)
    assert ctl.view()["active_order"] == order.id and ctl.view()["ordered_hs"] == pytest.approx(
        3 * RIG_HS, rel=0.01
    )
    # no second order while the first covers the deficit (for longer than a deficit takes
    # to become an order)
    await bench.control_periods(bench.trigger_periods())
    assert market.create_calls == 1
    # the rigs come back: cancel after recover_after_s, never before
    farm.hs = 10 * RIG_HS
    t_back = loop.time()
    await wait_until(lambda: order.state == "CANCELLED", 5, what="the order cancelled")
    assert loop.time() - t_back >= 0.5
    await wait_until(lambda: not any(f.connected for f in order.fleets), 5, what="rented rigs gone")
    assert market.create_calls == 1 and len(market.orders) == 1
    row = ctl.ledger.order(order.id)
    assert row["state"] == "closed" and row["raw_state"] == "CANCELLED"
    assert [i["state"] for i in ctl.ledger.intents()] == ["done", "done"]
    kinds = bench.kinds()
    assert kinds.index("rental_order_placed") < kinds.index("rental_order_cancelled")
    placed = next(e for e in bench.events if e["kind"] == "rental_order_placed")
    assert "deficit" in placed["reason"]
    cancelled = next(e for e in bench.events if e["kind"] == "rental_order_cancelled")
    assert "recovered" in cancelled["reason"]


async def test_429_and_5xx_are_retried_and_a_lost_create_answer_never_duplicates(bench):
    market = bench.market
    provider = bench.provider()
    ctl = bench.controller(provider)
    market.fail_next(429, 2, method="GET", path_contains="myOrders", retry_after=0.05)
    await ctl.start()  # reconcile reads myOrders: two 429s, then the answer
    assert ctl.reconciled and provider.retries == 2
    market.fail_next(503, 2, method="POST", path_contains="/hashpower/order/")  # before executing
    market.fail_next(
        502, 1, method="POST", path_contains="/hashpower/order/", after=True
    )  # executed, answer lost
    market.fail_next(500, 1, method="GET", path_contains="/hashpower/order/")
    bench.farm.hs = 5 * RIG_HS
    await wait_until(lambda: ctl.order is not None, 5, what="the order placed")
    assert market.create_calls == 1 and len(market.orders) == 1
    creates = [r for r in market.requests if r[1] == "POST" and r[2] == "/main/api/v2/hashpower/order/"]
    assert [r[3] for r in creates] == [503, 503, 502, 200]  # the 4th attempt got the cached answer
    status_reads = lambda: [r[3] for r in market.requests if r[1] == "GET" and "/hashpower/order/" in r[2]]  # noqa: E731
    await wait_until(lambda: status_reads()[:2] == [500, 200], 5, what="a status read retried after a 500")
    assert provider.retries == 2 + 3 + 1
    assert ctl.ledger.order(ctl.order.id)["state"] in ("pending", "active")
    # a cancel is retried too
    market.fail_next(503, 2, method="DELETE")
    bench.farm.hs = 10 * RIG_HS
    await wait_until(lambda: ctl.order is None, 5, what="cancelled after recovery")
    assert [o.state for o in market.orders.values()] == ["CANCELLED"]


async def test_cooldown_errors_are_respected(bench):
    market = bench.market
    ctl = bench.controller()
    await ctl.start()
    bench.farm.hs = 7 * RIG_HS
    await wait_until(lambda: ctl.order is not None, 5, what="order placed")
    market.cooldown_next(5110, 1.5)
    bench.farm.hs = 4 * RIG_HS  # more rigs die: the order should grow
    await wait_until(lambda: "rental_order_resized" in bench.kinds(), 6, what="resized after the cooldown")
    updates = [r for r in market.requests if "updatePriceAndLimit" in r[2]]
    assert [r[3] for r in updates] == [400, 200], updates  # exactly one refusal, then nothing until allowed
    assert updates[1][0] - updates[0][0] >= 1.5
    cool = next(e for e in bench.events if e["kind"] == "rental_cooldown")
    assert cool["retry_after_s"] == 1.5
    (order,) = market.orders.values()
    assert float(order.limit) == pytest.approx(6 * RIG_HS, rel=0.01)
    # a price decrease inside the marketplace's own cooldown is refused with 5061 and waited out
    assert ctl.policy.change_allowed_at > 0


async def test_budget_and_max_price_are_never_exceeded(bench):
    market = bench.market
    # spend fast (a real second is decades of market time): each 0.0001 BTC escrow lasts ~0.3 s
    market.config.time_scale = 1.5e9
    market.config.min_amount = Decimal("0.0001")
    budget = Decimal("0.0003")
    bench.config.rental.daily_budget_btc = str(budget)
    ctl = bench.controller()
    await ctl.start()
    bench.farm.hs = 0.0
    await wait_until(
        lambda: ctl.last_action is not None and ctl.last_action.code == "budget" and ctl.order is None,
        20,
        what="the budget used up",
    )
    amounts = sum((o.amount for o in market.orders.values()), Decimal(0))
    assert market.spent() <= budget and amounts <= budget
    assert market.spent() > budget / 2  # it really was spent, not just refused
    max_price = Decimal(bench.config.rental.max_price) / PER_PH
    assert all(o.price <= max_price for o in market.orders.values())
    assert Decimal(ctl.view()["budget_left_btc"]) < market.config.min_amount
    # the ledger agrees with the marketplace (which reports 8 decimals, rounded up)
    assert ctl.ledger.spent_today() == pytest.approx(market.spent(), abs=Decimal("1e-8") * len(market.orders))
    assert ctl.ledger.spent_today() <= budget
    # the market moves above max_price: no new order at any budget
    n = len(market.orders)
    market.config.market_price = max_price * 2
    bench.config.rental.daily_budget_btc = "1"
    ctl.quote = None
    await wait_until(lambda: ctl.last_action.code == "price", 5, what="refused on price")
    await bench.control_periods(3)
    assert len(market.orders) == n
