"""The farm's power input from the members' published plans (``proxy.cluster.power``), pure
and with an injected clock: summed, and a member whose figures stopped changing is unknown."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from proxy.cluster.power import STALE_BEATS, ClusterPower, farm_power, member_power
from proxy.config import load_dict
from proxy.power.match import RigMatcher
from proxy.power.monitor import PowerMonitor
from proxy.power.nutproto import Power, UpsReading
from proxy.power.plan import RigFigure, UpsState

PUBLISH = 0.5


def published(rent: float, hold: bool, decision: str = "order", rigs: int = 2) -> dict[str, Any]:
    return {"rent_now_hs": rent, "hold": hold, "reason": "x", "order_lead_s": 10.0, "publish_s": PUBLISH,
            "ups": [{"name": "ups-a", "decision": decision, "at_risk_hs": rent if hold else 0.0,
                     "rig_count": rigs, "rent_now": rent > 0, "hold": hold, "power": "battery",
                     "runtime_s": 5.0}],
            "curtailments": []}


def test_fresh_members_are_summed_and_named():
    members = {"a": published(1000.0, True), "b": published(3000.0, True), "c": published(0.0, False, "ok")}
    result, view = farm_power(members, {"a": 0.1, "b": 0.2, "c": 0.1})
    assert result.cover_hs == 4000.0 and result.hold
    assert "UPS ups-a on a 1 kH/s, b 3 kH/s" in result.reason, result.reason
    (ups,) = view["ups"]
    assert ups["at_risk_hs"] == 4000.0 and ups["rig_count"] == 6
    assert sorted(ups["instances"]) == ["a", "b", "c"]
    assert view["unknown_instances"] == []


def test_a_stale_member_rents_nothing_but_keeps_a_held_order():
    limit = STALE_BEATS * PUBLISH
    members = {"a": published(1000.0, True), "b": published(3000.0, True)}
    result, view = farm_power(members, {"a": 0.1, "b": limit + 0.01})
    assert result.cover_hs == 1000.0 and result.hold
    assert view["unknown_instances"] == ["b"] and "b unknown" in result.reason
    # only the stale member says it holds: nothing is rented, the live order stays
    result, _ = farm_power({"b": published(3000.0, True)}, {"b": limit + 5})
    assert result.cover_hs == 0.0 and result.hold
    # never seen change, or an instance that could not plan: unknown, nothing rented
    result, view = farm_power({"a": published(1000.0, True), "e": {"error": "boom", "publish_s": PUBLISH}},
                              {"e": 0.0})
    assert result.cover_hs == 0.0 and result.hold and view["unknown_instances"] == ["a", "e"]
    result, _ = farm_power({"b": published(0.0, False, "ok")}, {"b": limit + 5})
    assert not result  # stale and holding nothing: no order, none held


def test_cluster_power_ages_members_by_its_own_clock():
    now = [100.0]
    events: list[tuple[str, dict]] = []
    service = SimpleNamespace(power=None, events=SimpleNamespace(
        emit=lambda kind, t, reason, **f: events.append((kind, {"reason": reason, **f}))))
    node = SimpleNamespace(service=service, beat_s=PUBLISH, members={})
    power = ClusterPower(node, clock=lambda: now[0])
    node.members = {"a": {"time": 1.0, "power": published(2000.0, True)}}
    power.sample()
    assert power.input().cover_hs == 0.0  # first sight: its age is not known yet
    now[0] += 0.1
    node.members = {"a": {"time": 2.0, "power": published(2000.0, True)}}
    power.sample()
    assert power.input().cover_hs == 2000.0
    kind, fields = events[-1]
    assert kind == "power_farm" and fields["instances"] == ["a"] and fields["ups"] == ["ups-a"]
    # it stops publishing (frozen, partitioned): same summary, the clock runs on
    now[0] += STALE_BEATS * PUBLISH + PUBLISH + 0.01
    power.sample()
    result = power.input()
    assert result.cover_hs == 0.0 and result.hold
    assert events[-1][1]["unknown_instances"] == ["a"]
    node.members = {}  # its registration lapsed: gone from the farm's power
    power.sample()
    assert not power.input() and power.seen == {}


def test_member_power_publishes_the_monitor_plan():
    config = load_dict({"pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
                        "power": {"order_lead_s": 10, "runtime_margin_s": 2,
                                  "ups": [{"name": "ups-a", "nut": "ups@127.0.0.1:3493",
                                           "workers": ["rack.*"]}]}})
    rigs = [RigFigure(1, ("rack.1",), "127.0.0.1:5000", 500.0),
            RigFigure(2, ("other.1",), "127.0.0.1:5001", 900.0)]
    monitor = PowerMonitor(config.power, lambda: rigs, wall=lambda: 1000.0)
    monitor.ups["ups-a"] = UpsState("ups-a", RigMatcher.build(["rack.*"], []),
                                    UpsReading(Power.BATTERY, "OB", 40.0, 6.0), 1000.0, Power.BATTERY)
    p = member_power(monitor, PUBLISH)
    assert p["rent_now_hs"] == 500.0 and p["hold"] and p["order_lead_s"] == 10 and p["publish_s"] == PUBLISH
    (ups,) = p["ups"]
    figures = (ups["decision"], ups["at_risk_hs"], ups["rig_count"], ups["runtime_s"])
    assert figures == ("order", 500.0, 1, 6.0)


def test_instances_disagreeing_on_a_ups_settle_before_renting():
    now = [50.0]
    service = SimpleNamespace(power=None, events=SimpleNamespace(emit=lambda *a, **f: None))
    node = SimpleNamespace(service=service, beat_s=PUBLISH, members={})
    power = ClusterPower(node, clock=lambda: now[0])
    ok = published(0.0, False, "ok")
    mains = {**ok, "ups": [{**ok["ups"][0], "power": "online"}]}

    def beat(a: dict, b: dict) -> None:
        now[0] += PUBLISH
        node.members = {"a": {"time": now[0], "power": a}, "b": {"time": now[0], "power": b}}
        power.sample()

    beat(mains, mains)
    beat(published(2000.0, True), mains)  # a read it on battery first
    result = power.input()
    assert result.cover_hs == 0.0 and result.hold
    assert "disagree on UPS ups-a (battery/online)" in result.reason, result.reason
    beat(published(2000.0, True), published(3000.0, True))  # b follows a beat later: the whole farm's part
    assert power.input().cover_hs == 5000.0
    # a disagreement that lasts past the settling time is planned with as it stands
    beat(mains, mains)
    beat(published(2000.0, True), mains)
    assert power.input().cover_hs == 0.0
    now[0] += STALE_BEATS * PUBLISH + PUBLISH
    beat(published(2000.0, True), mains)
    assert power.input().cover_hs == 2000.0


def test_farm_curtailments_from_etcd_replace_the_farm_ones_and_name_a_bad_entry():
    config = load_dict({"pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
                        "power": {"ups": []}})
    events: list[tuple[str, str]] = []
    monitor = PowerMonitor(config.power, lambda: [], wall=lambda: 1000.0,
                           events=lambda kind, reason, **f: events.append((kind, reason)))
    good = {"name": "peak", "workers": ["rack.*"], "from": "2030-01-01T00:00:00Z",
            "until": "2030-01-01T01:00:00Z", "reason": "tariff"}
    monitor.set_farm_curtailments({"c1": good, "c2": {**good, "until": "soon"}})
    assert [c.source for c in monitor.curtailments.values()] == ["farm"] and "c1" in monitor.curtailments
    errors = [r for k, r in events if k == "power_error"]
    assert len(errors) == 1 and "c2" in errors[0]
    monitor.set_farm_curtailments({"c1": good, "c2": {**good, "until": "soon"}})  # each beat: named once
    assert len([k for k, _ in events if k == "power_error"]) == 1
    monitor.set_farm_curtailments({})
    assert monitor.curtailments == {}
    assert [k for k, _ in events].count("power_curtailment") == 2  # applied, removed


def test_check_config_says_what_power_does_in_a_farm():
    from proxy.cli import describe

    base = {"pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
            "power": {"ups": [{"name": "ups-a", "nut": "ups@127.0.0.1:3493", "workers": ["rack.*"]}]}}
    assert "power in the farm" not in describe(load_dict(base))
    text = describe(load_dict({**base, "proxy": {"instance": "m1-proxy-1"},
                               "cluster": {"etcd": ["http://127.0.0.1:2379"], "farm": "f"}}))
    assert "power in the farm: this instance's plan is published" in text


async def test_a_farm_curtailment_etcd_refuses_changes_nothing():
    import pytest

    from proxy.cluster.curtail import FarmCurtailments
    from proxy.cluster.etcd import EtcdError, EtcdUnavailable
    from proxy.power.monitor import CurtailmentError

    class DownEtcd:
        async def put(self, key: str, value: str, lease: int = 0) -> int:
            raise EtcdUnavailable("no etcd endpoint answered: refused")

    config = load_dict({"pools": [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
                        "power": {"ups": []}})
    monitor = PowerMonitor(config.power, lambda: [], wall=lambda: 1000.0)
    node = SimpleNamespace(service=SimpleNamespace(power=monitor), etcd=DownEtcd(),
                           key=lambda *parts: "/f/" + "/".join(parts))
    farm = FarmCurtailments(node)
    window = {"name": "peak", "workers": ["rack.*"], "from": "2030-01-01T00:00:00Z",
              "until": "2030-01-01T01:00:00Z"}
    with pytest.raises(CurtailmentError, match="^until"):
        await farm.add({**window, "until": "1999-01-01T00:00:00Z"})
    with pytest.raises(EtcdError, match="no etcd endpoint answered"):
        await farm.add(window)
    assert monitor.curtailments == {}
