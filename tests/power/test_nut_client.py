"""The asyncio NUT client and the power monitor against the NUT sim server: readings,
credentials, and every way upsd can fail becoming ``unknown`` with an event."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.config import load_dict
from proxy.power.monitor import CurtailmentError, PowerMonitor
from proxy.power.nut import read_ups
from proxy.power.nutproto import Power, parse_target
from proxy.power.plan import RigFigure
from proxy.sim import SimNut


@pytest.fixture
async def nut():
    sim = SimNut(users={"monuser": "s3cret \"q\""})
    sim.set("ups1", status="OL CHRG", charge=100, runtime=1800)
    await sim.start()
    yield sim
    await sim.stop()


async def test_reads_a_ups(nut):
    r = await read_ups(parse_target(nut.target("ups1")))
    assert (r.power, r.status, r.charge, r.runtime_s) == (Power.ONLINE, "OL CHRG", 100.0, 1800.0)
    r = await read_ups(parse_target(nut.target("ups1")), "monuser", 's3cret "q"')
    assert r.power is Power.ONLINE
    nut.set("ups1", status="OB DISCHRG", charge=71, runtime=240)
    r = await read_ups(parse_target(nut.target("ups1")))
    assert (r.power, r.runtime_s) == (Power.BATTERY, 240.0)


async def test_failures_are_unknown(nut):
    target = parse_target(nut.target("ups1"))
    r = await read_ups(target, "monuser", "wrong")
    assert r.power is Power.UNKNOWN and "ACCESS-DENIED" in r.reason
    r = await read_ups(parse_target(nut.target("nosuch")))
    assert r.power is Power.UNKNOWN and "UNKNOWN-UPS" in r.reason
    for mode, words in (("stale", "DATA-STALE"), ("garbage", "upsd at"), ("silent", "no answer")):
        nut.mode = mode
        loop = asyncio.get_running_loop()
        started = loop.time()
        r = await read_ups(target, timeout_s=0.3)
        assert r.power is Power.UNKNOWN and words in r.reason, (mode, r)
        assert loop.time() - started < 1.0
    nut.mode = "ok"
    await nut.stop()
    r = await read_ups(target, timeout_s=0.3)
    assert r.power is Power.UNKNOWN and "cannot reach" in r.reason


def power_config(nut: SimNut, tmp_path, **over: Any) -> Any:
    return load_dict({
        "pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
        "power": {"order_lead_s": 30, "runtime_margin_s": 5,
                  "curtailments_file": str(tmp_path / "curtail.json"),
                  "ups": [{"name": "a", "nut": nut.target("ups1"), "workers": ["farm.a*"], "poll_s": 0.05,
                           "timeout_s": 0.3}], **over},
    }).power


RIGS = [RigFigure(1, ("farm.a1",), "10.0.0.1:1", 100.0), RigFigure(2, ("farm.b1",), "10.0.0.2:1", 100.0)]


async def monitor_on(nut: SimNut, tmp_path) -> tuple[PowerMonitor, list[dict[str, Any]]]:
    """A running monitor of UPS "a" (on the sim's ups1, feeding farm.a*) once it has read it,
    and the events it emits."""
    events: list[dict[str, Any]] = []
    mon = PowerMonitor(power_config(nut, tmp_path), lambda: RIGS,
                       events=lambda kind, reason, **f: events.append({"kind": kind, "reason": reason, **f}))
    await mon.start()
    await wait_for(lambda: mon.ups["a"].reading.power is Power.ONLINE)
    return mon, events


async def test_monitor_events_and_unknown(nut, tmp_path):
    mon, events = await monitor_on(nut, tmp_path)
    try:
        nut.set("ups1", status="OB DISCHRG", runtime=20)
        await wait_for(lambda: mon.input().cover_hs == 100.0)
        decisions = [e for e in events if e["kind"] == "power_decision"]
        assert [d["decision"] for d in decisions] == ["ok", "order"]
        assert decisions[-1]["ups"] == "a" and decisions[-1]["rigs"] == ["farm.a1"]
        assert decisions[-1]["at_risk_hs"] == 100.0 and decisions[-1]["runtime_s"] == 20.0
        nut.mode = "garbage"
        await wait_for(lambda: mon.ups["a"].reading.power is Power.UNKNOWN)
        p = mon.input()
        assert p.cover_hs == 0 and p.hold  # unknown: no order decided, a live one is not cancelled
        assert [e for e in events if e["kind"] == "power_ups"][-1]["power"] == "unknown"
        view = mon.view()
        assert view["ups"][0]["decision"] == "unknown" and view["ups"][0]["unknown_reason"]
    finally:
        await mon.stop()


async def test_api_curtailments_validate_and_persist(nut, tmp_path):
    cfg = power_config(nut, tmp_path)
    mon = PowerMonitor(cfg, lambda: RIGS, wall=lambda: 1_900_000_000.0)
    good = {"name": "dr", "workers": ["farm.b*"], "from": "2030-03-17T18:46:40Z",
            "until": "2030-03-17T19:46:40Z", "reason": "demand response"}
    for body, field in (({**good, "until": "2030-03-17T17:00:00Z"}, "until"),
                        ({**good, "from": "soon"}, "from"), ({**good, "workers": []}, "workers"),
                        ({**good, "addresses": ["10.0.0.0/40"]}, "addresses[0]"),
                        ({**good, "rent": "yes"}, "rent"), ({**good, "colour": 1}, "colour"), ([1], "body")):
        with pytest.raises(CurtailmentError) as err:
            mon.add_curtailment(body)
        assert str(err.value).startswith(field) or f"`{field}`" in str(err.value), (field, err.value)
    added = mon.add_curtailment(good)
    assert added["decision"] == "scheduled" and added["rigs"] == ["farm.b1"]
    again = PowerMonitor(cfg, lambda: RIGS, wall=lambda: 1_900_000_000.0)
    await again.start()  # a restart keeps the API's curtailments
    assert list(again.curtailments) == [added["id"]]
    assert again.remove_curtailment(added["id"]) and not again.remove_curtailment(added["id"])
    await again.stop()


async def wait_for(predicate, timeout: float = 3.0) -> None:
    from proxy.sim import wait_until

    await wait_until(predicate, timeout)


async def test_starttls(tmp_path):
    from proxy.power.nut import tls_context
    from tests.farm_fixture import make_cert, server_context

    cert_key = make_cert(tmp_path, "upsd")
    other, _ = make_cert(tmp_path, "other")
    sim = SimNut(users={"mon": "pw"}, tls=server_context(cert_key))
    sim.set("ups1", status="OB", charge=50, runtime=300)
    plain = SimNut()
    plain.set("ups1", status="OL")
    await sim.start()
    await plain.start()
    try:
        target = parse_target(sim.target("ups1"))
        r = await read_ups(target, "mon", "pw", tls=tls_context(str(cert_key[0])))
        assert (r.power, r.runtime_s) == (Power.BATTERY, 300.0) and sim.tls_sessions == 1
        r = await read_ups(target, tls=tls_context(str(other)))  # a certificate we do not trust
        assert r.power is Power.UNKNOWN and "TLS" in r.reason
        r = await read_ups(target, tls=tls_context(verify=False))  # encrypted only
        assert r.power is Power.BATTERY
        # a upsd without TLS: unknown, never a fallback to plain text
        r = await read_ups(parse_target(plain.target("ups1")), tls=tls_context(str(cert_key[0])))
        assert r.power is Power.UNKNOWN and "FEATURE-NOT-CONFIGURED" in r.reason
    finally:
        await sim.stop()
        await plain.stop()


async def test_reload_changes_the_upses(nut, tmp_path):
    second = SimNut()
    second.set("ups9", status="OB", runtime=5)
    await second.start()
    mon, events = await monitor_on(nut, tmp_path)
    try:
        kept = mon.ups["a"].reading
        new = load_dict({
            "pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
            "power": {"order_lead_s": 30, "curtailments_file": "",
                      "ups": [{"name": "a", "nut": nut.target("ups1"), "workers": ["farm.b*"],
                               "poll_s": 0.05},
                              {"name": "b", "nut": second.target("ups9"), "workers": ["farm.a*"],
                               "poll_s": 0.05}]},
        }).power
        changes = mon.apply(new)
        assert changes[0] == "UPS b added" and mon.ups["a"].reading is kept  # same UPS: reading kept
        assert mon.last_plan is not None
        assert [r.rig_id for r in mon.last_plan.decisions[0].rigs] == [2]  # its rigs matched afresh
        await wait_for(lambda: mon.input().cover_hs == 100.0)  # b (on battery, 5 s) feeds farm.a1
        assert any(e["kind"] == "power_reload" for e in events)
        mon.apply(power_config(nut, tmp_path))  # b removed: its poll stops
        calls = second.list_calls
        before = nut.list_calls
        await wait_for(lambda: nut.list_calls > before + 3)
        assert "b" not in mon.ups and second.list_calls <= calls + 1
    finally:
        await mon.stop()
        await second.stop()


async def test_sighup_reload_applies_power(nut, tmp_path):
    from proxy.config import load
    from proxy.net.service import ProxyService

    path = tmp_path / "proxy.toml"

    def write(names: list[str]) -> None:
        ups = "".join(f'[[power.ups]]\nname = "{n}"\nnut = "{nut.target("ups1")}"\nworkers = ["farm.*"]\n'
                      for n in names)
        path.write_text('[proxy]\nlisten = "127.0.0.1:0"\n[api]\nenabled = false\n'
                        '[[pools]]\nname = "p"\nurl = "stratum+tcp://127.0.0.1:1"\nuser = "u"\n'
                        f'[power]\ncurtailments_file = ""\n{ups}')

    write(["a"])
    service = ProxyService(load(path))
    await service.start()
    try:
        assert list(service.power.ups) == ["a"]
        write(["a", "b"])
        result = service.reload()
        assert result["power"][0] == "UPS b added" and list(service.power.ups) == ["a", "b"]
    finally:
        await service.stop()
