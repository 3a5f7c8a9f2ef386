"""A UPS whose rigs are spread over two instances of an etcd farm: each instance publishes the
at-risk hashrate of its own rigs, the leader rents the sum once, before the rigs go dark, and
cancels it once mains are back and the rigs deliver; while the UPS's data is unknown nothing
is rented.  A curtailment added through one instance's API reaches every instance (etcd)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import aiohttp

from proxy.sim import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig
from proxy.sim.nut import SimNut

from .conftest import TOKEN

DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL  # 4096 H/s per sim rig
STAY, RACK = 4, 2  # per instance: rigs on mains, rigs on the UPS under test
LEAD, MARGIN, RUNTIME = 10, 2, 8  # runtime less margin (6 s) within the order lead: rent now


def control_periods(ctl, n: int):
    seen: list = []

    def counted() -> bool:
        t = (ctl.last_decision or {}).get("time")
        if not seen or seen[-1] != t:
            seen.append(t)
        return len(seen) > n
    return wait_until(counted, 10, what=f"{n} control periods", poll=0.01)


async def api(svc, method: str, path: str, body=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{svc.api_port}{path}", json=body,
            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        return resp.status, await resp.json()


async def curtailment_reaches_the_farm(taker, other, leader) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200))
    window = {"name": "tariff", "workers": ["stay*"], "from": start, "until": until, "reason": "peak"}
    status, body = await api(taker, "POST", "/api/v1/power/curtailments", {**window, "until": "soon"})
    assert status == 400 and "until" in body["error"], body
    status, body = await api(taker, "POST", "/api/v1/power/curtailments", window)
    assert status == 201 and body["source"] == "farm", body
    cid = body["id"]

    def applied(svc) -> bool:
        c = svc.power.curtailments.get(cid)
        return c is not None and c.source == "farm"

    await wait_until(lambda: applied(other), 5, what="the curtailment applied on the other instance")

    def farm_row() -> dict:
        _, view = leader.cluster.power.compute()
        return next((r for r in view["curtailments"] if r["name"] == "tariff"), {})

    await wait_until(lambda: farm_row().get("rig_count") == 2 * STAY and sorted(farm_row()["instances"]) == [
        "proxy-1", "proxy-2"], 5, what="each instance's stopped rigs in the farm's view")
    assert {d["decision"] for d in farm_row()["instances"].values()} == {"scheduled"}
    status, _ = await api(other, "DELETE", f"/api/v1/power/curtailments/{cid}")
    assert status == 200
    await wait_until(lambda: not applied(taker) and not applied(other), 5, what="removed everywhere")
    status, _ = await api(other, "DELETE", f"/api/v1/power/curtailments/{cid}")
    assert status == 404


async def test_ups_across_two_instances_one_order_for_the_sum(cluster, etcd):
    await cluster.pool("primary", difficulty=DIFF)
    market = SimMarket(SimMarketConfig(market_price=Decimal("0.000000000002"), activation_delay_s=0.2,
                                       rig_difficulty=DIFF, rig_share_interval=INTERVAL,
                                       min_amount=Decimal("0.0001"), min_limit=Decimal("100"), tick_s=0.05))
    nut = SimNut()
    nut.set("ups", status="OL", charge=100, runtime=3600)
    await market.start()
    await nut.start()
    try:
        target = 2 * (STAY + RACK) * RIG_HS
        extra = {"cluster": {"etcd": etcd.endpoints, "farm": f"power-{uuid.uuid4().hex[:6]}",
                             "lease_ttl_s": 2, "publish_s": 0.3, "timeout_s": 1.0},
                 # trigger_after_s long: a deficit alone orders nothing in this test, only power does
                 "rental": {"provider": "sim", "api_url": market.url, "target_hashrate": f"{target} H/s",
                            "trigger_deficit": 0.15, "trigger_after_s": 60, "recover_after_s": 0.5,
                            "min_order_s": 0, "max_price": "4000", "daily_budget_btc": "0.01",
                            "window_s": 2.0, "interval_s": 0.1, "pool": "primary"},
                 "power": {"order_lead_s": LEAD, "runtime_margin_s": MARGIN, "learn_lead": False,
                           "ups": [{"name": "ups", "nut": nut.target("ups"), "workers": ["rack*"],
                                    "poll_s": 0.1, "timeout_s": 0.5}]}}
        one = await cluster.instance("proxy-1", extra=extra)
        two = await cluster.instance("proxy-2", prefix_start=0x8000, extra=extra)
        both = (one, two)
        for i, svc in enumerate(both):
            await cluster.start_fleet(STAY, port=svc.port, share_interval=INTERVAL, worker_prefix=f"stay{i}")
        racks = [await cluster.start_fleet(RACK, port=svc.port, share_interval=INTERVAL,
                                           worker_prefix=f"rack{i}") for i, svc in enumerate(both)]
        await wait_until(lambda: sum(s.rental is not None for s in both) == 1, 5, what="one leader")
        leader = next(s for s in both if s.rental is not None)
        ctl = leader.rental
        await wait_until(lambda: ctl.delivered_hs is not None and ctl.delivered_hs > 0.85 * target, 10,
                         what="the farm measured at target")

        def farm_ups() -> dict:
            _, view = leader.cluster.power.compute()
            return next((u for u in view["ups"] if u["name"] == "ups"), {})

        await wait_until(lambda: sorted(farm_ups().get("instances", {})) == ["proxy-1", "proxy-2"]
                         and farm_ups()["rig_count"] == 2 * RACK, 5, what="both instances' racks published")

        # a curtailment added through one instance's API is in etcd: every instance applies it
        await curtailment_reaches_the_farm(two, one, leader)

        # on battery, but the UPS's data is unknown to both instances: nothing is rented
        nut.mode = "stale"
        nut.set("ups", status="OB DISCHRG", charge=20, runtime=RUNTIME)
        await wait_until(lambda: {d.get("decision") for d in farm_ups()["instances"].values()} == {"unknown"},
                         5, what="the UPS unknown on both instances")
        await control_periods(ctl, 5)
        assert market.create_calls == 0 and not market.orders

        # readable again: on battery, runtime within the order lead: one order for both racks
        on_battery = time.monotonic()
        nut.mode = "ok"
        await wait_until(lambda: market.orders and any(
            e["kind"] == "rental_order_placed" for e in leader.events.recent(50)), 10, what="the order")
        placed_after = time.monotonic() - on_battery
        assert placed_after < RUNTIME - MARGIN, placed_after  # before the rigs would go dark
        assert all(f.connected == RACK for f in racks)  # still on battery power: nothing lost yet
        (order,) = market.orders.values()
        at_risk = 2 * RACK * RIG_HS
        assert 0.7 * at_risk <= float(order.limit) <= 1.5 * at_risk, (float(order.limit), at_risk)
        (placed,) = [e for e in leader.events.recent(200) if e["kind"] == "rental_order_placed"]
        assert placed["code"] == "power"
        assert "UPS ups on" in placed["reason"] and "proxy-1" in placed["reason"] \
            and "proxy-2" in placed["reason"], placed["reason"]
        other = two if leader is one else one
        assert not [e for e in other.events.recent(200) if e["kind"] == "rental_order_placed"]
        farm_events = [e for e in leader.events.recent(200, kind="power_farm") if e["rent_now_hs"] > 0]
        assert farm_events and farm_events[-1]["instances"] == ["proxy-1", "proxy-2"] \
            and farm_events[-1]["ups"] == ["ups"]

        # every instance serves the farm's view (from the summaries it read last beat)
        await wait_until(lambda: other.cluster.power.settled(*other.cluster.power.compute())[0].cover_hs
                         > 0.7 * at_risk, 5, what="the farm's power view on the other instance")
        status, view = await api(other, "GET", "/api/v1/farm/power")
        assert status == 200
        assert view["holding_order"] is True and view["rent_now_hs"] > 0.7 * at_risk
        assert view["ups"][0]["name"] == "ups" and view["unknown_instances"] == []

        # the rigs go dark; the order stays, no second one
        for fleet in racks:
            await fleet.stop()
        await control_periods(ctl, 10)
        assert market.create_calls == 1 and order.state == "ACTIVE"

        # mains back and the rigs deliver again: the normal recovery cancels the order
        nut.set("ups", status="OL CHRG", charge=30, runtime=600)
        for i, svc in enumerate(both):
            await cluster.start_fleet(RACK, port=svc.port, share_interval=INTERVAL, worker_prefix=f"rack{i}")
        await wait_until(lambda: leader.events.recent(kind="rental_order_cancelled"), 15,
                         what="the order cancelled")
        (cancelled,) = leader.events.recent(kind="rental_order_cancelled")
        assert cancelled["code"] == "recovered"
        assert market.create_calls == 1
    finally:
        await nut.stop()
        await market.stop()
