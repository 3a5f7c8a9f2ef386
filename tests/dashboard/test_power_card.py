"""The dashboard's Power card: hidden without [power]; with it, each UPS and curtailment with
its decision, figures and reason, what is at risk and what is rented (the document is what a
real PowerMonitor serves, routed into the page)."""

from __future__ import annotations

import time

from playwright.async_api import expect

from proxy.config import load_dict
from proxy.core.events import EventLog
from proxy.power.monitor import PowerMonitor
from proxy.power.nutproto import Power, UpsReading
from proxy.power.plan import RigFigure, UpsState
from proxy.sim.nut import SimNut
from tests.dashboard.conftest import RIGS, start_farm

NOW = 1_900_000_000.0


def power_document() -> dict:
    cfg = load_dict({
        "pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
        "power": {"order_lead_s": 300, "curtailments_file": "",
                  "ups": [{"name": "rack-a", "nut": "rack-a@127.0.0.1:3493", "workers": ["a.*"]},
                          {"name": "rack-b", "nut": "rack-b@127.0.0.1:3493", "workers": ["b.*"]}],
                  "curtail": [{"name": "4cp", "workers": ["b.*"], "from": "2030-03-17T18:46:40Z",
                               "until": "2030-03-17T19:46:40Z", "reason": "peak"}]},
    })
    rigs = [RigFigure(1, ("a.1",), "10.0.0.1:1", 5e12), RigFigure(2, ("a.2",), "10.0.0.2:1", 5e12),
            RigFigure(3, ("b.1",), "10.0.0.3:1", 7e12)]
    mon = PowerMonitor(cfg.power, lambda: rigs, wall=lambda: NOW)
    a, b = mon.ups["rack-a"], mon.ups["rack-b"]
    mon.ups["rack-a"] = UpsState("rack-a", a.matcher, UpsReading(Power.BATTERY, "OB DISCHRG", 64.0, 200.0),
                                 NOW, Power.BATTERY)
    mon.ups["rack-b"] = UpsState("rack-b", b.matcher, UpsReading(Power.UNKNOWN, reason="connection refused"),
                                 NOW, None)
    return {"enabled": True, **mon.view(),
            "rental": {"enabled": True, "state": "renting", "active_order": "o-1", "ordered_hs": 1e13,
                       "rented_hs": 9e12, "decision": "power", "reason": "UPS rack-a ..."}}


async def test_power_card(dash):
    await start_farm(dash.api)
    doc = power_document()
    answer = {"body": {"enabled": False, "ups": [], "curtailments": []}}

    async def power(route):
        await route.fulfill(json=answer["body"])

    page = await dash.open(rigs=RIGS)
    await page.route("**/api/v1/power", power)
    await expect(page.locator("#power-card")).to_be_hidden()
    answer["body"] = doc
    try:
        await expect(page.locator("#power-card")).to_be_visible()
    except AssertionError:
        raise AssertionError(f"page errors: {dash.errors}") from None
    items = page.locator("#power-list li")
    await expect(items).to_have_count(3)
    await expect(items.nth(0)).to_contain_text(
        "UPS rack-a order: OB DISCHRG · 64% · runtime 3 min · 2 rigs · 10.0 TH/s at risk")
    await expect(items.nth(0)).to_have_class("bad")
    await expect(items.nth(1)).to_contain_text("UPS rack-b unknown")
    await expect(items.nth(1)).to_contain_text("connection refused")
    await expect(items.nth(2)).to_contain_text("curtailment 4cp scheduled")
    await expect(items.nth(2)).to_contain_text("1 rigs · 7.00 TH/s")
    await expect(page.locator("#power-note")).to_contain_text("at risk 10.0 TH/s")
    await expect(page.locator("#power-note")).to_contain_text("order 10.0 TH/s, delivering 9.00 TH/s")


async def test_power_events_in_words(dash):
    """What a real PowerMonitor emits when it reads a UPS on battery from the NUT simulator,
    served as the events API serves it: the timeline says it in words, under the Power filter."""
    nut = SimNut()
    nut.set("rack-a", "OB DISCHRG", 64, 200)
    await nut.start()
    try:
        cfg = load_dict({
            "pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
            "power": {"order_lead_s": 300, "curtailments_file": "",
                      "ups": [{"name": "rack-a", "nut": nut.target("rack-a"), "workers": ["a.*"]}]},
        })
        log = EventLog()
        rigs = [RigFigure(1, ("a.1",), "10.0.0.1:1", 5e12), RigFigure(2, ("a.2",), "10.0.0.2:1", 5e12)]
        mon = PowerMonitor(cfg.power, lambda: rigs,
                           events=lambda kind, reason, **f: log.emit(kind, time.time(), reason=reason, **f))
        await mon.poll("rack-a")  # on battery, 200 s - 60 s margin within the 300 s lead: order
    finally:
        await nut.stop()
    assert [e["kind"] for e in log.recent()] == ["power_ups", "power_decision"]

    await start_farm(dash.api)
    page = await dash.open(rigs=RIGS)

    async def events(route):
        await route.fulfill(json={"events": log.recent()})

    await page.route("**/api/v1/events*", events)
    await page.locator("#event-filter").select_option("power")
    ups = page.locator("#events li[data-kind=power_ups]")
    await expect(ups.locator(".ev-text")).to_have_text(
        "UPS rack-a on battery (OB DISCHRG), charge 64%, runtime 200s")
    await expect(ups).to_have_class("event ev-warn")
    decision = page.locator("#events li[data-kind=power_decision]")
    await expect(decision.locator(".ev-text")).to_have_text(
        "UPS rack-a: renting the at-risk hashrate now · 2 rigs, 10.0 TH/s at risk")
    await expect(decision.locator(".ev-reason")).to_contain_text("UPS rack-a on battery")
    await expect(page.locator("#events li")).to_have_count(2)  # the filter keeps only power events
    assert dash.errors == []
