"""The power planner and the backfill policy with it, pure, on an injected clock."""

from __future__ import annotations

from decimal import Decimal

from proxy.power.match import RigMatcher
from proxy.power.nutproto import Power, UpsReading
from proxy.power.plan import Curtailment, LeadEstimator, RigFigure, UpsState, plan
from proxy.rental.policy import BackfillPolicy, PolicyConfig
from proxy.rental.provider import OrderStatus, Quote

TH = 1e12
RIGS = [RigFigure(i, (f"farm.a{i}",), f"10.0.1.{i}:4000", 10 * TH) for i in range(3)]
RIGS += [RigFigure(10 + i, (f"farm.b{i}",), f"10.0.2.{i}:4000", 10 * TH) for i in range(3)]
ON_A = RigMatcher.build(["farm.a*"], [])
ON_B = RigMatcher.build([], ["10.0.2.0/24"])


def ups(name, matcher, power, status, runtime=None, read_at=0.0, last_known=None):
    return UpsState(name, matcher, UpsReading(power, status, 80.0, runtime, "" if power is not Power.UNKNOWN
                                              else "connection refused"), read_at, last_known or power)


def test_matching_by_worker_glob_and_cidr():
    assert ON_A.matches(["farm.a1"], "1.1.1.1:3") and not ON_A.matches(["farm.b1"], "10.0.1.1:3")
    assert ON_B.matches(["x"], "10.0.2.9:3") and not ON_B.matches(["x"], "10.0.3.9:3")
    assert not ON_B.matches(["x"], "[::1]:3") and RigMatcher.build([], ["::1/128"]).matches([], "[::1]:5")


def test_battery_runtime_against_the_lead():
    long = ups("a", ON_A, Power.BATTERY, "OB DISCHRG", runtime=900, read_at=100.0)
    p = plan([long], [], RIGS, 100.0, lead_s=300, margin_s=60)
    (d,) = p.decisions
    assert d.decision == "watch" and d.at_risk_hs == 30 * TH and len(d.rigs) == 3
    assert not p.input.cover_hs and p.input.hold  # not back on mains: a live order stays
    # the runtime counts down between readings: 900 s read at t=100, now t=640: 360 left - 60 = 300
    p = plan([long], [], RIGS, 640.0, lead_s=300, margin_s=60)
    assert p.decisions[0].decision == "order" and p.input.cover_hs == 30 * TH
    assert "UPS a" in p.input.reason and "3 rigs" in p.input.reason


def test_critical_unknown_and_online():
    lb = ups("a", ON_A, Power.CRITICAL, "OB LB", runtime=5000)
    assert plan([lb], [], RIGS, 0, 300, 60).input.cover_hs == 30 * TH
    ol = ups("b", ON_B, Power.ONLINE, "OL")
    p = plan([ol], [], RIGS, 0, 300, 60)
    assert p.decisions[0].decision == "ok" and not p.input
    gone = ups("a", ON_A, Power.UNKNOWN, "", last_known=Power.ONLINE)
    p = plan([gone], [], RIGS, 0, 300, 60)
    assert p.decisions[0].decision == "unknown" and not p.input
    gone_on_battery = ups("a", ON_A, Power.UNKNOWN, "", last_known=Power.BATTERY)
    p = plan([gone_on_battery], [], RIGS, 0, 300, 60)
    assert p.input.cover_hs == 0 and p.input.hold  # no order from unknown data, none cancelled either


def test_a_rig_counted_once():
    both = RigMatcher.build(["farm.*"], [])
    c = Curtailment("c1", "dr", both, 1000.0, 2000.0, "demand response", True, "api")
    lb = ups("a", ON_A, Power.CRITICAL, "LB")
    p = plan([lb], [c], RIGS, 800.0, 300, 60)
    assert [d.decision for d in p.decisions] == ["order", "ordering"]
    assert p.input.cover_hs == 60 * TH


def test_curtailment_window():
    c = Curtailment("c1", "dr", ON_B, 1000.0, 2000.0, "demand response", True, "config")
    states = [(plan([], [c], RIGS, t, 300, 60).decisions[0].decision, plan([], [c], RIGS, t, 300, 60).input)
              for t in (0, 699, 700, 1000, 1999, 2000)]
    assert [s for s, _ in states] == ["scheduled", "scheduled", "ordering", "open", "open", "over"]
    assert [i.cover_hs for _, i in states] == [0, 0, 30 * TH, 30 * TH, 30 * TH, 0]
    assert [i.hold for _, i in states] == [False, False, True, True, True, False]
    no_rent = Curtailment("c2", "m", ON_B, 1000.0, 2000.0, "maintenance", False, "api")
    assert not plan([], [no_rent], RIGS, 1500, 300, 60).input


def test_lead_learned_from_deliveries():
    lead = LeadEstimator(120)
    assert lead.lead_s() == 120
    lead.observe(90)
    assert lead.lead_s() == 120 and lead.learned_s == 90
    lead.observe(400)
    assert lead.lead_s() == 400
    for _ in range(5):
        lead.observe(100)
    assert lead.lead_s() == 120  # the slow one aged out
    assert LeadEstimator(120, learn=False).lead_s() == 120


CFG = PolicyConfig(target_hs=60 * TH, trigger_deficit=0.05, trigger_after_s=120, recover_band=0.025,
                   recover_after_s=60, max_price=Decimal("0.001"), min_order_s=0)
QUOTE = Quote(price=Decimal("0.0005"), available_hs=0.0, min_limit_hs=0.0, max_limit_hs=1e18,
              min_amount=Decimal("0.0001"), price_down_step=Decimal("-0.0001"))


def order(limit_hs, delivered_hs=0.0):
    return OrderStatus(id="o1", state="active", raw_state="ACTIVE", limit_hs=limit_hs,
                       price=Decimal("0.0005"), amount=Decimal("0.01"), spent=Decimal(0),
                       remaining=Decimal("0.01"),
                       delivered_hs=delivered_hs, pool_id="p", created=0.0)


def test_policy_rents_the_at_risk_hashrate_before_the_dip():
    lb = ups("a", ON_A, Power.CRITICAL, "OB LB")
    power = plan([lb], [], RIGS, 0, 300, 60).input
    pol = BackfillPolicy(CFG)
    a = pol.decide(0.0, 60 * TH, None, budget_left=Decimal("1"), quote=QUOTE, power=power)
    assert a.kind == "place" and a.code == "power" and a.limit_hs == 30 * TH  # at once: no trigger wait
    assert "UPS a" in a.reason and a.fields["at_risk_hs"] == 30 * TH
    # without the power input the same farm is fine
    plain = BackfillPolicy(CFG).decide(0.0, 60 * TH, None, budget_left=Decimal("1"), quote=QUOTE)
    assert plain.kind == "none"
    # above max_price: no order even for power
    dear = Quote(price=Decimal("0.002"), available_hs=0.0, min_limit_hs=0.0, max_limit_hs=1e18,
                 min_amount=Decimal("0.0001"), price_down_step=Decimal("-0.0001"))
    assert BackfillPolicy(CFG).decide(0.0, 60 * TH, None, budget_left=Decimal("1"), quote=dear,
                                      power=power).code == "price"


def test_policy_holds_then_recovers_when_power_is_back():
    pol = BackfillPolicy(CFG)
    on_battery = plan([ups("a", ON_A, Power.BATTERY, "OB", runtime=10)], [], RIGS, 0, 300, 60).input
    rented = order(30 * TH, 30 * TH)
    # rigs dead, order delivering: covered
    assert pol.decide(10.0, 60 * TH, rented, budget_left=Decimal("1"), quote=QUOTE,
                      power=plan([ups("a", ON_A, Power.BATTERY, "OB", runtime=10)], [], RIGS[3:], 10, 300,
                                 60).input).code == "covered"
    # the rigs come back while still on battery: held, not cancelled
    a = pol.decide(20.0, 90 * TH, rented, budget_left=Decimal("1"), quote=QUOTE, power=on_battery)
    assert a.kind == "none" and a.code in ("covered", "power_hold")
    unknown = plan([ups("a", ON_A, Power.UNKNOWN, "", last_known=Power.BATTERY)], [], RIGS, 0, 300, 60).input
    for t in (30.0, 200.0):
        assert pol.decide(t, 90 * TH, rented, budget_left=Decimal("1"), quote=QUOTE,
                          power=unknown).code == "power_hold"
    online = plan([ups("a", ON_A, Power.ONLINE, "OL")], [], RIGS, 0, 300, 60).input
    assert pol.decide(300.0, 90 * TH, rented, budget_left=Decimal("1"), quote=QUOTE,
                      power=online).code == "recovering"
    a = pol.decide(361.0, 90 * TH, rented, budget_left=Decimal("1"), quote=QUOTE, power=online)
    assert a.kind == "cancel" and a.code == "recovered"


def test_rig_grouping_is_cached_and_exact():
    from proxy.power.plan import group_rigs

    cache: dict = {}
    first = group_rigs([ON_A, ON_B], RIGS, cache)
    assert [[r.rig_id for r in g] for g in first] == [[0, 1, 2], [10, 11, 12]]
    assert len(cache) == len(RIGS)
    again = group_rigs([ON_A, ON_B], [*RIGS, RigFigure(99, ("farm.a9",), "10.0.2.9:1", 1.0)], cache)
    assert [r.rig_id for r in again[0]] == [0, 1, 2, 99] and [r.rig_id for r in again[1]] == [10, 11, 12, 99]
