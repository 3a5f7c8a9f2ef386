"""The backfill story both rental end-to-end tests tell (SV1 and GPU rigs): the farm at
target, a third of the rigs die, one order of about their hashrate pointed at the proxy's own
port, the rented rigs bring the proxy's own measurement back."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from proxy.sim import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig


def backfill_market(rig_difficulty: float, rig_share_interval: float, **extra: Any) -> SimMarket:
    """The marketplace of both stories: a price the policy accepts, orders active in 0.2 s,
    rented rigs mining at the farm's own difficulty and pace (``extra``: e.g. the algorithm)."""
    return SimMarket(SimMarketConfig(
        market_price=Decimal("0.000000000002"), activation_delay_s=0.2, rig_difficulty=rig_difficulty,
        rig_share_interval=rig_share_interval, min_amount=Decimal("0.0001"), min_limit=Decimal("100"),
        tick_s=0.05, **extra))


async def rigs_die_and_are_backfilled(ctl: Any, market: Any, doomed: Any, farm_hs: float,
                                      proxy_port: int) -> Any:
    """Returns the marketplace's order once it delivers and the farm is back near target."""
    await wait_until(lambda: ctl.delivered_hs is not None and ctl.delivered_hs > 0.9 * farm_hs, 8,
                     what="the farm at target")
    assert not market.orders
    await doomed.stop()  # a third of the rigs die
    await wait_until(lambda: market.orders, 8, what="the backfill order")
    (order,) = market.orders.values()
    assert 0.2 * farm_hs <= float(order.limit) <= 0.5 * farm_hs
    (dest,) = market.pools.values()
    assert (dest.host, dest.port, dest.username) == ("127.0.0.1", proxy_port, "rental")
    # rented rigs dial the proxy; its own measurement recovers towards the target
    await wait_until(lambda: (ctl.measured_hs is not None and ctl.measured_hs >= 0.85 * farm_hs
                              and order.delivered_hs > 0), 10, what="delivered back at target")
    return order
