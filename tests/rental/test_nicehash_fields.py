"""NiceHash client details an independent emulator found: the order's start time is
``startTs`` (so a restart keeps ``min_order_s`` and the duplicate order reconcile keeps the
newest), and every request names the client in ``X-User-Agent``."""

from __future__ import annotations

import time
from decimal import Decimal

from proxy.rental.nicehash import USER_AGENT
from proxy.rental.provider import Destination
from proxy.sim import wait_until


async def test_start_time_and_user_agent(bench):
    provider = bench.provider()
    try:
        dest = Destination("primary", "127.0.0.1", bench.pool.port, "acct", "x")
        pool_id = await provider.ensure_pool(dest)
        before = time.time()
        placed = await provider.place_order(limit_hs=1000.0, pool_id=pool_id, price=Decimal("0.002"),
                                            amount=Decimal("0.001"), idempotency_key="k1")
        (listed,) = await provider.active_orders()
        status = await provider.status(placed.id)
        for order in (placed, listed, status):
            assert before - 1 <= order.created <= time.time() + 1, order.created
        assert bench.market.user_agents == {USER_AGENT} and USER_AGENT.startswith("stratum-proxy/")
    finally:
        await provider.close()


async def test_a_restart_keeps_min_order_s_from_the_start_time(bench):
    """An adopted order's age counts from its start, not from the adoption: with the order
    older than min_order_s the recovered farm's order is cancelled at once after a restart."""
    first = bench.controller()
    bench.farm.hs = 0.0
    await first.start()
    await wait_until(lambda: first.order is not None, 5, what="the order")
    assert first.order is not None
    created = first.order.created
    await first.stop()
    second = bench.controller()
    await second.start(run=False)
    assert second.order is not None and second.order.created == created > 0
    assert second.policy.order_since is not None
    assert abs((second.clock() - second.policy.order_since) - (time.time() - created)) < 1.0
    await second.stop()
