"""The issue's "Done when", against Debian's real upsd with the dummy-ups driver: the proxy
reads the UPS, rents the at-risk hashrate before the rigs on it die (at once on LB, only
when needed with a long runtime), never from unknown data, and the normal recovery path
cancels once power is back and the rigs deliver.  Every case also with the proxy restarted
in the middle: the ledger adopts the order, none is duplicated."""

from __future__ import annotations

import pytest

from proxy.power.nut import read_ups
from proxy.power.nutproto import Power, parse_target
from proxy.sim import SimNut, wait_until

from .farm import AT_RISK, RIG_HS, PowerFarm

RESTART = pytest.mark.parametrize("restart", [False, True], ids=["", "restarted"])


@pytest.fixture
async def farm(upsd, tmp_path):
    f = PowerFarm(tmp_path, upsd.target(upsd.ups), f"{upsd.ups}rack")
    try:
        await f.start()
        yield f
    finally:
        await f.stop()


async def test_real_upsd_reads(upsd):
    target = parse_target(upsd.target(upsd.ups))
    r = await read_ups(target, "monuser", "secret")
    assert (r.power, r.status, r.charge, r.runtime_s) == (Power.ONLINE, "OL", 100.0, 1800.0)
    assert upsd.upsc(upsd.ups, "battery.runtime") == "1800"  # what NUT's own client sees
    upsd.set(upsd.ups, "OB DISCHRG", 80, 45)
    await upsd.wait_power(upsd.ups, Power.BATTERY)
    r = await read_ups(target)
    assert (r.status, r.runtime_s) == ("OB DISCHRG", 45.0)
    upsd.kill_upsd()
    r = await read_ups(target, timeout_s=0.5)
    assert r.power is Power.UNKNOWN and "cannot reach" in r.reason


async def power_returns(farm: PowerFarm, upsd, restart_rigs: bool) -> None:
    """Back on mains (and the rigs back if they died): the order is cancelled by recovery."""
    upsd.set(upsd.ups, "OL CHRG", 90, 1500)
    if restart_rigs:
        await farm.rigs_on_ups()
    (order,) = farm.orders()
    try:
        await wait_until(lambda: farm.events("rental_order_cancelled"), 15, what="the order cancelled")
    except TimeoutError:
        raise AssertionError(f"not cancelled; last decision {farm.ctl.last_decision}") from None
    (cancelled,) = farm.events("rental_order_cancelled")
    assert cancelled["code"] == "recovered" and order.state == "CANCELLED"
    assert farm.market is not None and farm.market.create_calls == 1


def assert_one_power_order(farm: PowerFarm) -> None:
    orders = farm.orders()
    assert len(orders) == 1, [o.id for o in orders]
    assert farm.market is not None and farm.market.create_calls == 1
    # the at-risk hashrate (measured per rig: noisy over a few seconds of shares)
    assert 0.5 * AT_RISK * RIG_HS <= float(orders[0].limit) <= 1.8 * AT_RISK * RIG_HS, float(orders[0].limit)


@RESTART
async def test_short_runtime_orders_before_the_rigs_die(farm, upsd, restart):
    assert not farm.orders()
    upsd.set(upsd.ups, "OB DISCHRG", 70, 8)  # 8 s - 2 s margin: within the 10 s order lead
    # the market holds the order once it takes the call; the controller's event follows the answer
    await wait_until(lambda: farm.orders() and farm.events("rental_order_placed"), 5, what="the order")
    assert farm.rigs_on_ups_connected() == AT_RISK  # before the rigs die
    assert_one_power_order(farm)
    (placed,) = farm.events("rental_order_placed")
    assert placed["code"] == "power" and "UPS ups" in placed["reason"] and placed["at_risk_hs"] > 0
    decision = [e for e in farm.events("power_decision") if e.get("decision") == "order"][-1]
    assert decision["rig_count"] == AT_RISK and decision["runtime_s"] == 8.0
    assert all(r.startswith(farm.rack) for r in decision["rigs"])
    if restart:
        await farm.restart()
        await farm.control_periods(5)
        assert [e["action"] for e in farm.events("rental_reconcile")] == ["adopt"]
    await farm.rigs_die()
    order = farm.orders()[0]
    await wait_until(lambda: order.delivered_hs > 0, 5, what="the order delivering")
    await farm.control_periods(5)
    assert_one_power_order(farm)
    await power_returns(farm, upsd, restart_rigs=True)


@RESTART
async def test_long_runtime_orders_only_when_needed(farm, upsd, restart):
    upsd.set(upsd.ups, "OB DISCHRG", 95, 600)
    await wait_until(lambda: "watch" in farm.decisions(), 5, what="the UPS watched")
    await farm.control_periods(5)
    assert not farm.orders()
    if restart:
        await farm.restart()
        await wait_until(lambda: "watch" in farm.decisions(), 5, what="the UPS watched again")
        await farm.control_periods(3)
        assert not farm.orders()
    upsd.set(upsd.ups, "OB DISCHRG", 40, 11)  # now 9 s to go after the margin: within the lead
    await wait_until(lambda: farm.orders(), 5, what="the order")
    assert_one_power_order(farm)
    assert farm.decisions()[-1] == "order"
    await power_returns(farm, upsd, restart_rigs=False)


@RESTART
async def test_low_battery_orders_at_once(farm, upsd, restart):
    upsd.set(upsd.ups, "OB LB", 10, 1000)  # plenty of runtime reported, but LB: now
    await wait_until(lambda: farm.orders(), 5, what="the order")
    assert_one_power_order(farm)
    if restart:
        await farm.restart()
        await farm.control_periods(5)
        assert_one_power_order(farm)
    await farm.rigs_die()
    await farm.control_periods(5)
    await power_returns(farm, upsd, restart_rigs=True)


@RESTART
async def test_unknown_never_orders(farm, upsd, restart):
    upsd.kill_upsd()
    await wait_until(lambda: "unknown" in farm.decisions(), 5, what="the UPS unknown")
    # a poll in flight when upsd died may say "closed the connection mid-answer" first
    await wait_until(lambda: any("cannot reach" in e["reason"] for e in farm.events("power_ups")
                                 if e["power"] == "unknown"), 5, what="upsd unreachable")
    await farm.control_periods(5)
    if restart:
        await farm.restart()
        await wait_until(lambda: "unknown" in farm.decisions(), 5, what="the UPS unknown after the restart")
    # something that is not upsd answers on its port: garbage
    garbage = SimNut(port=upsd.port)
    garbage.mode = "garbage"
    await garbage.start()
    try:
        await wait_until(lambda: garbage.sessions > 2, 5, what="polls answered with garbage")
        await farm.control_periods(5)
        assert farm.decisions()[-1] == "unknown"
        assert "upsd at" in farm.events("power_ups")[-1]["reason"]
    finally:
        await garbage.stop()
    assert not farm.orders()
    status, doc = await farm.api("GET", "/api/v1/power")
    assert status == 200 and doc["ups"][0]["decision"] == "unknown" and doc["rent_now_hs"] == 0
