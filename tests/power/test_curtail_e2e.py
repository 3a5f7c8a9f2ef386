"""Planned curtailment: a window from the API (with the proxy restarted in the middle) and
one from the config each give an order that delivers when the window opens and is cancelled
after it, once the rigs are back; the API, /metrics and the validation around it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.sim import wait_until

from .farm import AT_RISK, RIG_HS, PowerFarm

LEAD = 1.5


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def farm_factory(upsd, tmp_path):
    farms: list[PowerFarm] = []

    async def make(**power) -> PowerFarm:
        f = PowerFarm(tmp_path, upsd.target(upsd.ups), f"{upsd.ups}rack",
                      power={"order_lead_s": LEAD, **power})
        farms.append(f)
        await f.start()
        return f

    yield make
    for f in farms:
        await f.stop()


async def run_window(farm: PowerFarm, start: float, until: float, restart: bool = False) -> None:
    """The order before the window, delivering when it opens, the rigs off during it, back
    after it, the order cancelled after it."""
    # the market holds the order as soon as it takes the call; the controller's event follows
    # the answer: wait for both
    await wait_until(lambda: farm.orders() and farm.events("rental_order_placed"), start - time.time() + 1,
                     what="the order ahead of the window")
    placed_at = time.time()
    assert placed_at < start
    assert_at_risk_order(farm)
    if restart:
        await farm.restart()
        assert [e["action"] for e in farm.events("rental_reconcile")] == ["adopt"]
    (order,) = farm.orders()
    await wait_until(lambda: time.time() >= start, start - time.time() + 1, what="the window opening")
    assert order.delivered_hs > 0 and order.state == "ACTIVE"  # delivering when the window opens
    await farm.rigs_die()  # curtailed
    await wait_until(lambda: time.time() >= until, until - time.time() + 1, what="the window closing")
    assert order.state == "ACTIVE" and not farm.events("rental_order_cancelled")  # held through it
    await farm.rigs_on_ups()  # back after the window
    await wait_until(lambda: farm.events("rental_order_cancelled"), 10, what="the order cancelled")
    (cancelled,) = farm.events("rental_order_cancelled")
    assert cancelled["time"] >= until and cancelled["code"] == "recovered"
    assert farm.market is not None and farm.market.create_calls == 1


def assert_at_risk_order(farm: PowerFarm) -> None:
    (order,) = farm.orders()
    assert 0.5 * AT_RISK * RIG_HS <= float(order.limit) <= 1.8 * AT_RISK * RIG_HS, float(order.limit)
    (placed,) = farm.events("rental_order_placed")
    assert placed["code"] == "power" and "curtailment" in placed["reason"]


async def test_curtailment_from_the_config(farm_factory, upsd):
    now = time.time()
    start, until = now + 3.0, now + 4.2
    rack = f"{upsd.ups}rack"
    farm = await farm_factory(curtail=[{"name": "4cp", "workers": [f"{rack}.*"], "from": iso(start),
                                        "until": iso(until), "reason": "4CP peak"}])
    await run_window(farm, start, until)
    decisions = [e["decision"] for e in farm.events("power_decision") if e.get("curtailment") == "4cp"]
    assert decisions == ["scheduled", "ordering", "open", "over"]


async def test_curtailment_through_the_api(farm_factory, upsd):
    farm = await farm_factory()
    rack = f"{upsd.ups}rack"
    now = time.time()
    start, until = now + 3.2, now + 4.7
    body = {"name": "dr", "workers": [f"{rack}.*"], "from": iso(start), "until": iso(until),
            "reason": "demand response"}
    status, doc = await farm.api("POST", "/api/v1/power/curtailments", body, token=None)
    assert status == 401
    for bad, field in (({**body, "until": iso(start - 1)}, "until"),
                       ({**body, "addresses": ["x"]}, "addresses[0]"),
                       ({**body, "from": "tomorrow"}, "from")):
        status, doc = await farm.api("POST", "/api/v1/power/curtailments", bad)
        assert status == 400 and doc["error"].startswith(field), doc
    status, doc = await farm.api("POST", "/api/v1/power/curtailments", body)
    assert status == 201 and doc["rig_count"] == AT_RISK and doc["decision"] == "scheduled", doc
    status, power = await farm.api("GET", "/api/v1/power")
    assert status == 200 and power["enabled"] and power["curtailments"][0]["id"] == doc["id"]
    assert power["ups"][0]["power"] == "online" and power["ups"][0]["rig_count"] == AT_RISK
    await run_window(farm, start, until, restart=True)
    assert farm.service is not None
    text = await metrics(farm)
    samples = {(s.name, s.labels.get("status") or s.labels.get("kind")): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("stratum_proxy_ups_status", "online")] == 1
    assert samples[("stratum_proxy_ups_status", "battery")] == 0
    assert ("stratum_proxy_hashrate_at_risk_hashes_per_second", "curtailment") in samples
    assert samples[("stratum_proxy_power_order_lead_seconds", None)] >= LEAD
    status, _ = await farm.api("DELETE", f"/api/v1/power/curtailments/{doc['id']}")
    assert status == 200
    status, _ = await farm.api("DELETE", f"/api/v1/power/curtailments/{doc['id']}")
    assert status == 404


async def metrics(farm: PowerFarm) -> str:
    import aiohttp

    assert farm.service is not None
    async with aiohttp.ClientSession() as http:
        return await (await http.get(f"http://127.0.0.1:{farm.service.api_port}/metrics")).text()
