"""max_price = "hashprice": the policy on an injected clock, no sockets, no sleeping.

Every expected cap below is the hashprice times (1 + premium) written out by hand in Decimal.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from proxy.rental.policy import BackfillPolicy, HashpriceReading, price_cap

from .test_policy import BUDGET, CFG, QUOTE, TH, order

FOLLOW = replace(CFG, max_price=None, max_premium=Decimal("0.05"))
EARNS = HashpriceReading(Decimal("0.00040"), pool="primary")  # cap: 0.00040 * 1.05 = 0.00042


def _after_trigger(policy: BackfillPolicy, quote, hashprice, delivered=80 * TH):
    policy.decide(0.0, delivered, None, budget_left=BUDGET, quote=quote, hashprice=hashprice)
    return policy.decide(120.0, delivered, None, budget_left=BUDGET, quote=quote, hashprice=hashprice)


def test_rents_when_the_market_is_within_the_premium_over_the_hashprice():
    quote = replace(QUOTE, price=Decimal("0.000419"))
    a = _after_trigger(BackfillPolicy(FOLLOW), quote, EARNS)
    assert a.kind == "place" and a.price == Decimal("0.000419")
    prices = {k: Decimal(v) for k, v in a.prices().items()}
    assert prices == {"hashprice": Decimal("0.0004"), "market_price": Decimal("0.000419"),
                      "max_price": Decimal("0.00042")}
    assert "hashprice 0.0004 +5.0% = 0.00042" in a.reason
    assert a.view()["hashprice"] == "0.00040"


def test_no_order_when_the_market_is_above_it_and_the_reason_says_both_prices():
    quote = replace(QUOTE, price=Decimal("0.000421"))
    a = _after_trigger(BackfillPolicy(FOLLOW), quote, EARNS)
    assert (a.kind, a.code) == ("wait", "price")
    assert "market price 0.000421" in a.reason and "hashprice 0.0004 +5.0% = 0.00042" in a.reason
    assert a.prices()["market_price"] == "0.000421" and a.prices()["hashprice"] == "0.00040"
    # without a premium the cap is the hashprice itself: a market at 0.000401 does not pay
    plain = replace(FOLLOW, max_premium=Decimal(0))
    b = _after_trigger(BackfillPolicy(plain), replace(QUOTE, price=Decimal("0.000401")), EARNS)
    assert (b.kind, b.code) == ("wait", "price")
    c = _after_trigger(BackfillPolicy(plain), replace(QUOTE, price=Decimal("0.000399")), EARNS)
    assert c.kind == "place"


def test_an_unknown_hashprice_never_rents_and_says_why():
    unknown = HashpriceReading(None, "coinbase does not parse: no outputs", "primary")
    a = _after_trigger(BackfillPolicy(FOLLOW), QUOTE, unknown)
    assert (a.kind, a.code) == ("wait", "no_hashprice")
    assert "coinbase does not parse: no outputs" in a.reason
    assert a.prices()["hashprice"] is None and a.prices()["max_price"] is None
    assert _after_trigger(BackfillPolicy(FOLLOW), QUOTE, None).code == "no_hashprice"


def test_a_falling_hashprice_lowers_the_open_order_to_the_new_cap():
    p = BackfillPolicy(FOLLOW)
    live = order(40 * TH, 40 * TH, price=Decimal("0.00040"))
    a = p.decide(0.0, 120 * TH, live, budget_left=BUDGET, quote=QUOTE, hashprice=EARNS)
    assert a.kind == "none"  # 0.00040 <= 0.00042
    fell = HashpriceReading(Decimal("0.00030"))
    a = p.decide(1.0, 120 * TH, live, budget_left=BUDGET, quote=QUOTE, hashprice=fell)
    assert (a.kind, a.code) == ("resize", "max_price")
    assert a.price == Decimal("0.00030") * Decimal("1.05")
    # unknown while the order runs: the order is neither raised nor lowered on a guess
    a = p.decide(2.0, 120 * TH, live, budget_left=BUDGET, quote=QUOTE,
                 hashprice=HashpriceReading(None, "no job"))
    assert a.kind == "none"


def test_a_fixed_max_price_ignores_the_hashprice():
    quote = replace(QUOTE, price=Decimal("0.00045"))  # CFG.max_price is 0.00050
    a = _after_trigger(BackfillPolicy(CFG), quote, HashpriceReading(Decimal("0.0001")))
    assert a.kind == "place" and "max_price 0.0005" in a.reason
    assert price_cap(CFG, None) == (Decimal("0.00050"), "max_price 0.0005")
    assert price_cap(FOLLOW, EARNS)[0] == Decimal("0.00042")
