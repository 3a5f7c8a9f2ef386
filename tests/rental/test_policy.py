"""BackfillPolicy on an injected clock: no sockets, no sleeping."""

from __future__ import annotations

from decimal import Decimal

from proxy.rental.policy import BackfillPolicy, PolicyConfig
from proxy.rental.provider import OrderStatus, Quote

TH = 1e12
CFG = PolicyConfig(
    target_hs=120 * TH,
    trigger_deficit=0.05,
    trigger_after_s=120,
    recover_band=0.025,
    recover_after_s=600,
    max_price=Decimal("0.00050"),
    min_order_s=1800,
)
QUOTE = Quote(
    price=Decimal("0.00040"),
    available_hs=1e18,
    min_amount=Decimal("0.001"),
    min_limit_hs=1 * TH,
    max_limit_hs=1e19,
)
BUDGET = Decimal("0.0100")


def order(
    limit_hs, delivered_hs=0.0, *, state="active", price=Decimal("0.00040"), remaining=Decimal("0.005")
):
    return OrderStatus(
        id="o1",
        state=state,
        raw_state=state.upper(),
        limit_hs=limit_hs,
        price=price,
        amount=Decimal("0.005"),
        spent=Decimal(0),
        remaining=remaining,
        delivered_hs=delivered_hs,
        pool_id="p",
        created=0.0,
    )


def test_no_order_until_the_deficit_lasts_trigger_after_s():
    p = BackfillPolicy(CFG)
    for t in range(0, 120, 10):
        a = p.decide(float(t), 80 * TH, None, budget_left=BUDGET, quote=QUOTE)
        assert a.kind == "wait" and a.code == "deficit", (t, a)
    a = p.decide(120.0, 80 * TH, None, budget_left=BUDGET, quote=QUOTE)
    assert a.kind == "place"
    assert a.limit_hs == 40 * TH  # target - delivered
    assert a.price == Decimal("0.00040") <= CFG.max_price
    assert Decimal("0.001") <= a.amount <= BUDGET


def test_a_short_dip_or_a_small_deficit_never_rents():
    p = BackfillPolicy(CFG)
    assert p.decide(0.0, 80 * TH, None, budget_left=BUDGET, quote=QUOTE).kind == "wait"
    assert p.decide(60.0, 119 * TH, None, budget_left=BUDGET, quote=QUOTE).kind == "none"  # back: timer reset
    assert p.decide(150.0, 80 * TH, None, budget_left=BUDGET, quote=QUOTE).kind == "wait"
    for t in range(0, 10_000, 100):  # 4% short: inside trigger_deficit forever
        assert p.decide(1000.0 + t, 115.5 * TH, None, budget_left=BUDGET, quote=QUOTE).kind == "none"


def test_unknown_hashrate_holds():
    p = BackfillPolicy(CFG)
    for t in range(0, 1000, 50):
        assert p.decide(float(t), None, None, budget_left=BUDGET, quote=QUOTE).kind == "none"


def test_max_price_and_budget_are_never_exceeded():
    p = BackfillPolicy(CFG)
    p.decide(0.0, 0.0, None, budget_left=BUDGET, quote=QUOTE)
    dear = Quote(**{**QUOTE.__dict__, "price": Decimal("0.00051")})
    a = p.decide(200.0, 0.0, None, budget_left=BUDGET, quote=dear)
    assert a.kind == "wait" and a.code == "price"
    a = p.decide(201.0, 0.0, None, budget_left=Decimal("0.0009"), quote=QUOTE)
    assert a.kind == "wait" and a.code == "budget"
    a = p.decide(202.0, 0.0, None, budget_left=Decimal("0.0015"), quote=QUOTE)
    assert a.kind == "place" and a.amount == Decimal("0.001")  # the marketplace minimum covers 1 h
    # a big order is funded for max(min_order_s, 1 h), capped by what is left of the budget
    assert p.amount_for(Decimal("0.0004"), 1e20, QUOTE, Decimal("0.0015")) == Decimal("0.0015")
    assert p.amount_for(Decimal("0.0004"), 1e17, QUOTE, BUDGET) == Decimal("0.00166667")  # 100 PH for 1 h
    # a live order above max_price (max_price lowered on reload) is repriced, never kept
    a = p.decide(
        203.0, 100 * TH, order(120 * TH, 100 * TH, price=Decimal("0.0009")), budget_left=BUDGET, quote=QUOTE
    )
    assert a.kind == "resize" and a.price == CFG.max_price


def test_resize_follows_the_deficit_and_respects_cooldown():
    p = BackfillPolicy(CFG)
    o = order(40 * TH, 40 * TH)
    # own = 120 - 40 = 80; farm loses another 20 TH: delivered 100 with 40 rented -> own 60, need 60
    a = p.decide(0.0, 100 * TH, o, budget_left=BUDGET, quote=QUOTE)
    assert a.kind == "resize" and a.limit_hs == 60 * TH and a.price == o.price
    p.note_cooldown(0.0, 300)
    for t in (1.0, 100.0, 299.0):
        a = p.decide(t, 100 * TH, o, budget_left=BUDGET, quote=QUOTE)
        assert a.kind == "wait" and a.code == "cooldown"
    assert p.decide(300.0, 100 * TH, o, budget_left=BUDGET, quote=QUOTE).kind == "resize"
    # within tolerance (5% of target): leave it
    assert (
        p.decide(301.0, 118 * TH, order(40 * TH, 40 * TH), budget_left=BUDGET, quote=QUOTE).code == "covered"
    )


def test_cancel_only_after_the_band_the_hold_and_min_order():
    p = BackfillPolicy(CFG)
    p.note_order_started(0.0)
    o = order(40 * TH, 40 * TH)
    # own rigs at 96% of target: below the 97.5% band, keep renting
    assert p.decide(2000.0, (115.2 + 40) * TH, o, budget_left=BUDGET, quote=QUOTE).kind != "cancel"
    # own rigs back at 98%: hold for recover_after_s
    for t in range(2100, 2700, 100):
        a = p.decide(float(t), (117.6 + 40) * TH, o, budget_left=BUDGET, quote=QUOTE)
        assert a.kind == "none" and a.code == "recovering", (t, a)
    a = p.decide(2700.0, (117.6 + 40) * TH, o, budget_left=BUDGET, quote=QUOTE)
    assert a.kind == "cancel" and a.code == "recovered"
    # a dip resets the hold
    p2 = BackfillPolicy(CFG)
    p2.note_order_started(0.0)
    p2.decide(2000.0, 160 * TH, o, budget_left=BUDGET, quote=QUOTE)
    p2.decide(2500.0, 130 * TH, o, budget_left=BUDGET, quote=QUOTE)  # own 90: not recovered
    assert p2.decide(2700.0, 160 * TH, o, budget_left=BUDGET, quote=QUOTE).kind == "none"
    # min_order_s: recovered early, the order still runs 1800 s
    p3 = BackfillPolicy(CFG)
    p3.note_order_started(1000.0)
    p3.decide(1000.0, 160 * TH, o, budget_left=BUDGET, quote=QUOTE)
    a = p3.decide(1700.0, 160 * TH, o, budget_left=BUDGET, quote=QUOTE)
    assert a.kind == "none" and a.code == "min_order"
    assert p3.decide(2800.0, 160 * TH, o, budget_left=BUDGET, quote=QUOTE).kind == "cancel"


def test_refill_within_budget_and_reprice_when_starved():
    p = BackfillPolicy(CFG)
    low = order(40 * TH, 40 * TH, remaining=Decimal("0.00000001"))
    a = p.decide(0.0, 120 * TH - 1, low, budget_left=BUDGET, quote=QUOTE)
    assert a.kind == "refill" and Decimal("0.001") <= a.amount <= BUDGET
    a = p.decide(1.0, 120 * TH - 1, low, budget_left=Decimal("0.0001"), quote=QUOTE)
    assert a.kind == "none" and a.code == "budget"
    # the market moved above the order's price and the order gets nothing: raise, up to max_price
    p = BackfillPolicy(CFG)
    up = Quote(**{**QUOTE.__dict__, "price": Decimal("0.00045")})
    starved = order(40 * TH, 0.0)
    assert p.decide(0.0, 80 * TH, starved, budget_left=BUDGET, quote=up).kind == "none"
    a = p.decide(120.0, 80 * TH, starved, budget_left=BUDGET, quote=up)
    assert a.kind == "resize" and a.price == Decimal("0.00045")


def test_window_average_matches_a_windowed_measurement():
    from proxy.rental.policy import WindowAverage

    avg = WindowAverage(10.0)
    assert avg.average(0.0) == 0.0
    avg.add(0.0, 0.0)
    avg.add(5.0, 40 * TH)  # rented rigs connect at t=5
    assert avg.average(10.0) == 20 * TH  # half the window
    avg.add(10.0, 40 * TH)
    assert avg.average(15.0) == 40 * TH


def test_rented_speed_averaged_like_the_measurement_does_not_grow_the_order():
    # rented rigs came through the proxy 2 s ago: the 10 s window has seen 20% of them
    p = BackfillPolicy(CFG)
    o = order(40 * TH, 40 * TH)
    measured = 80 * TH + 0.2 * 40 * TH
    naive = p.decide(0.0, measured, o, budget_left=BUDGET, quote=QUOTE)
    assert naive.kind == "resize" and naive.limit_hs > 70 * TH  # what happens without averaging
    p = BackfillPolicy(CFG)
    a = p.decide(0.0, measured, o, budget_left=BUDGET, quote=QUOTE, rented_hs=0.2 * 40 * TH)
    assert a.code == "covered", a
