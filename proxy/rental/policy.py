"""The backfill policy: when to rent, how much, at what price, and when to stop.

A pure state machine (``BackfillPolicy.decide(now, delivered_hs, order, budget_left=,
quote=) -> Action``), with no I/O and no clock of its own, so every decision is tested on an
injected clock; ``proxy.rental.controller`` drives it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import TYPE_CHECKING, Any

from .provider import PH, OrderStatus, Quote
from .units import format_btc, format_hashrate, format_price, price_decimals

if TYPE_CHECKING:
    from ..power.plan import PowerInput

log = logging.getLogger("proxy.rental")

SATOSHI = Decimal("0.00000001")
PRICE_FIELDS = ("hashprice", "market_price", "max_price")  # in every decision, BTC/PH/day
DAY_S = 86400
FUNDING_MIN_S = 3600.0  # an order is funded for max(min_order_s, this)
REFILL_WHEN_LEFT_S = 900.0  # refill when the escrow covers less than this much running
ERROR_BACKOFF_S = 30.0


def _price(price: Decimal, quote: Quote | None) -> str:
    """A price in BTC/PH/day for a message, to the marketplace's precision (its price step)."""
    return format_price(price, price_decimals(quote.price_down_step) if quote is not None else None)


@dataclass(frozen=True)
class PolicyConfig:
    target_hs: float
    trigger_deficit: float
    trigger_after_s: float
    recover_band: float
    recover_after_s: float
    max_price: Decimal | None  # None: follow the hashprice (``max_price = "hashprice"``)
    min_order_s: float
    max_premium: Decimal = Decimal(0)  # with the hashprice: pay at most this fraction above it

    @classmethod
    def from_rental(cls, cfg: Any) -> PolicyConfig:
        return cls(
            target_hs=cfg.target_hs,
            trigger_deficit=cfg.trigger_deficit,
            trigger_after_s=cfg.trigger_after_s,
            recover_band=cfg.band,
            recover_after_s=cfg.recover_after_s,
            max_price=cfg.max_price_btc,
            min_order_s=cfg.min_order_s,
            max_premium=Decimal(repr(cfg.max_premium)),
        )


@dataclass(frozen=True)
class HashpriceReading:
    """What the farm's hashrate earns (BTC per PH/s per day), as the proxy reads it from its
    pools' jobs; ``value`` None with the ``reason`` while unknown."""

    value: Decimal | None
    reason: str = ""
    pool: str | None = None


def price_cap(cfg: PolicyConfig, hashprice: HashpriceReading | None) -> tuple[Decimal | None, str]:
    """The most an order may pay now, and how it was found: a fixed ``max_price``, or the
    hashprice plus ``max_premium`` (rounded down to the satoshi); None while that is unknown."""
    if cfg.max_price is not None:
        return cfg.max_price, f"max_price {format_price(cfg.max_price, None)}"
    if hashprice is None or hashprice.value is None:
        why = hashprice.reason if hashprice is not None else "no hashprice source"
        return None, f"hashprice unknown ({why})"
    cap = (hashprice.value * (1 + cfg.max_premium)).quantize(SATOSHI, ROUND_DOWN)
    premium = f" {cfg.max_premium:+.1%}" if cfg.max_premium else ""
    return cap, f"hashprice {format_price(hashprice.value, None)}{premium} = {format_price(cap, None)}"


@dataclass
class Action:
    kind: str  # none | wait | place | resize | cancel | refill
    code: str  # a stable short key of the reason (events are emitted when it changes)
    reason: str
    limit_hs: float = 0.0
    price: Decimal | None = None
    amount: Decimal | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind, "code": self.code, "reason": self.reason}
        if self.kind in ("place", "resize"):
            out["limit_hs"] = self.limit_hs
        if self.price is not None:
            out["price"] = str(self.price)
        if self.amount is not None:
            out["amount_btc"] = str(self.amount)
        out.update(self.prices())
        return out

    def prices(self) -> dict[str, Any]:
        """The hashprice, the market price and the cap the decision was made with."""
        return {k: self.fields[k] for k in PRICE_FIELDS if k in self.fields}


class WindowAverage:
    """Time-weighted average of a step signal over the last ``window_s`` (0 before any sample).

    Why: when rented rigs come through the proxy, the proxy's measurement is an average over
    its window while the provider reports the rented speed as of now; subtracting the one from
    the other right after the rented rigs connect would make the farm look worse than it is,
    grow the order, and overshoot.  Averaging the reported speed over the same window keeps
    ``own = delivered - rented`` honest."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> None:
        self.samples.append((now, value))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window_s:
            self.samples.popleft()

    def average(self, now: float) -> float:
        if not self.samples:
            return 0.0
        start = now - self.window_s
        total = 0.0
        points = list(self.samples)
        for (t0, v), (t1, _) in zip(points, [*points[1:], (now, 0.0)]):
            lo, hi = max(t0, start), min(t1, now)
            if hi > lo:
                total += v * (hi - lo)
        # before the first sample the signal was 0 (no order): divide by the whole window
        return total / self.window_s if self.window_s > 0 else points[-1][1]


class BackfillPolicy:
    """When to place, resize, refill or cancel the one backfill order.  Pure: time comes in."""

    def __init__(self, cfg: PolicyConfig) -> None:
        self.cfg = cfg
        self.deficit_since: float | None = None
        self.recovered_since: float | None = None
        self.starving_since: float | None = None
        self.order_since: float | None = None
        self.change_allowed_at = 0.0  # marketplace cooldown on price/limit changes
        self.retry_at = 0.0  # back-off after a failed provider call

    def note_cooldown(self, now: float, seconds: float) -> None:
        self.change_allowed_at = max(self.change_allowed_at, now + max(seconds, 0.0))

    def note_failure(self, now: float, backoff_s: float = ERROR_BACKOFF_S) -> None:
        self.retry_at = now + backoff_s

    def note_order_started(self, started_at: float) -> None:
        """The order was placed (or, after a restart, created) at this clock time."""
        self.order_since = started_at

    def amount_for(
        self, price: Decimal, limit_hs: float, quote: Quote, budget_left: Decimal
    ) -> Decimal | None:
        """Escrow for one order: enough to run max(min_order_s, 1 h), at least the marketplace
        minimum, never more than the budget left; None when the budget cannot cover the minimum."""
        funded_s = Decimal(repr(max(self.cfg.min_order_s, FUNDING_MIN_S)))
        want = (price * Decimal(repr(limit_hs)) / PH * funded_s / DAY_S).quantize(SATOSHI, ROUND_UP)
        want = max(want, quote.min_amount)
        cap = budget_left.quantize(SATOSHI, ROUND_DOWN)
        if cap < quote.min_amount or cap <= 0:
            return None
        return min(want, cap)

    def _limit(self, need_hs: float, quote: Quote | None) -> float:
        if quote is None:
            return need_hs
        return min(max(need_hs, quote.min_limit_hs), quote.max_limit_hs)

    def decide(
        self,
        now: float,
        delivered_hs: float | None,
        order: OrderStatus | None,
        *,
        budget_left: Decimal,
        quote: Quote | None,
        rented_hs: float | None = None,
        hashprice: HashpriceReading | None = None,
        power: PowerInput | None = None,
    ) -> Action:
        """``delivered_hs``: everything delivered to the pool (own + rented); ``rented_hs``: the
        rented part of it, when the caller knows it better than ``order.delivered_hs``;
        ``hashprice``: what the hashrate earns, the price cap when ``max_price`` follows it;
        ``power``: the power planner's input (``proxy.power.plan``): hashrate still delivered
        but about to be lost (a UPS on battery, a curtailment), counted as lost already, so the
        order comes before the dip (no ``trigger_after_s`` wait) and a live order is not
        cancelled while power is not back."""
        c = self.cfg
        target = c.target_hs
        cap, cap_text = price_cap(c, hashprice)
        prices = {
            "hashprice": decimal_text(hashprice.value if hashprice is not None else None),
            "market_price": decimal_text(quote.price if quote is not None else None),
            "max_price": decimal_text(cap),
        }
        if delivered_hs is None:
            return Action("none", "unknown", "delivered hashrate unknown (not enough history): holding",
                          fields=prices)
        live = order is not None and order.alive
        rented = 0.0
        if live and order is not None:
            rented = order.delivered_hs if rented_hs is None else rented_hs
        cover = power.cover_hs if power is not None else 0.0
        own = max(0.0, delivered_hs - rented)
        safe = max(0.0, own - cover)  # what the own rigs will still deliver once the at-risk go dark
        # the at-risk hashrate is rented whole (a surplus over the target is not counted against
        # it: it is noise in a windowed measurement as often as it is real), plus any deficit now
        need = max(0.0, target - own) + cover
        info = {"delivered_hs": delivered_hs, "own_hs": own, "rented_hs": rented, "target_hs": target,
                **prices}
        if power:
            info["at_risk_hs"] = cover
        if not live or order is None:
            self.recovered_since = self.starving_since = self.order_since = None
            floor = target * (1 - c.trigger_deficit)
            ahead = cover > 0 and delivered_hs - cover < floor  # rent before the rigs go dark
            if delivered_hs >= floor and not ahead:
                self.deficit_since = None
                return Action(
                    "none",
                    "ok",
                    f"delivered {format_hashrate(delivered_hs)} >= "
                    f"{format_hashrate(floor)} (target less trigger_deficit)",
                    fields=info,
                )
            if self.deficit_since is None:
                self.deficit_since = now
            lasted = now - self.deficit_since
            if lasted < c.trigger_after_s and not ahead:
                return Action(
                    "wait",
                    "deficit",
                    f"deficit {format_hashrate(target - delivered_hs)} for "
                    f"{lasted:.0f}s of trigger_after_s {c.trigger_after_s:g}s",
                    fields=info,
                )
            if now < self.retry_at:
                return Action(
                    "wait",
                    "backoff",
                    f"backing off after a provider error ({self.retry_at - now:.0f}s)",
                    fields=info,
                )
            if quote is None:
                return Action("wait", "no_quote", "no market quote yet", fields=info)
            if cap is None:
                return Action("wait", "no_hashprice", f"market price {_price(quote.price, quote)} "
                              f"BTC/PH/day, {cap_text}: not renting", fields=info)
            if quote.price > cap:
                return Action(
                    "wait",
                    "price",
                    f"market price {_price(quote.price, quote)} BTC/PH/day is above {cap_text}: "
                    "not renting",
                    fields=info,
                )
            price = quote.price if quote.price > 0 else cap
            limit = self._limit(need, quote)
            amount = self.amount_for(price, limit, quote, budget_left)
            if amount is None:
                return Action(
                    "wait",
                    "budget",
                    f"budget left {format_btc(budget_left)} BTC is below the minimum order "
                    f"amount {format_btc(quote.min_amount)} BTC: not renting",
                    fields=info,
                )
            if ahead and power is not None:
                return Action(
                    "place",
                    "power",
                    f"{power.reason}: renting {format_hashrate(limit)} at {_price(price, quote)} "
                    f"BTC/PH/day (within {cap_text}) before the rigs go dark",
                    limit, price, amount, info,
                )
            return Action(
                "place",
                "place",
                f"deficit {format_hashrate(target - delivered_hs)} "
                f"({(target - delivered_hs) / target:.1%}) for {lasted:.0f}s: renting "
                f"{format_hashrate(limit)} at {_price(price, quote)} BTC/PH/day (within {cap_text})",
                limit,
                price,
                amount,
                info,
            )

        # one live order
        self.deficit_since = None
        if self.order_since is None:
            self.order_since = now
        if budget_left < -SATOSHI:  # below a satoshi is rounding, not overspending
            return Action(
                "cancel",
                "over_budget",
                f"over the daily budget by {format_btc(-budget_left)} BTC (budget lowered?): cancelling",
                fields=info,
            )
        if cap is not None and order.price > cap:
            if now < self.change_allowed_at:
                return Action(
                    "wait",
                    "cooldown",
                    f"order price {_price(order.price, quote)} above {cap_text}; "
                    f"cooldown {self.change_allowed_at - now:.0f}s",
                    fields=info,
                )
            return Action(
                "resize",
                "max_price",
                f"order price {_price(order.price, quote)} above {cap_text}: lowering",
                order.limit_hs,
                cap,
                fields=info,
            )
        recovered_at = target * (1 - c.recover_band)
        if safe >= recovered_at and power is not None and power.hold:
            self.recovered_since = None
            return Action(
                "none",
                "power_hold",
                f"rigs deliver {format_hashrate(own)} but power is not back ({power.reason}): "
                "the order stays",
                fields=info,
            )
        if safe >= recovered_at:
            if self.recovered_since is None:
                self.recovered_since = now
            held = now - self.recovered_since
            if held < c.recover_after_s:
                return Action(
                    "none",
                    "recovering",
                    f"rigs back: own {format_hashrate(own)} >= "
                    f"{format_hashrate(recovered_at)} for {held:.0f}s of recover_after_s "
                    f"{c.recover_after_s:g}s",
                    fields=info,
                )
            age = now - self.order_since
            if age < c.min_order_s:
                return Action(
                    "none",
                    "min_order",
                    f"rigs recovered; order runs {c.min_order_s - age:.0f}s more (min_order_s)",
                    fields=info,
                )
            return Action(
                "cancel",
                "recovered",
                f"rigs recovered: own {format_hashrate(own)} >= "
                f"{format_hashrate(recovered_at)} for {held:.0f}s: cancelling",
                fields=info,
            )
        self.recovered_since = None
        if now < self.retry_at:
            return Action("wait", "backoff", "backing off after a provider error", fields=info)
        desired = self._limit(need, quote)
        tolerance = target * c.trigger_deficit
        if abs(desired - order.limit_hs) > tolerance:
            if now < self.change_allowed_at:
                return Action(
                    "wait",
                    "cooldown",
                    f"resize to {format_hashrate(desired)} waits for the "
                    f"marketplace cooldown ({self.change_allowed_at - now:.0f}s)",
                    fields=info,
                )
            return Action(
                "resize",
                "resize",
                f"deficit now {format_hashrate(need)}: order "
                f"{format_hashrate(order.limit_hs)} -> {format_hashrate(desired)}",
                desired,
                order.price,
                fields=info,
            )
        if (
            quote is not None
            and order.state == "active"
            and rented < 0.5 * order.limit_hs
            and quote.price > order.price
        ):
            if self.starving_since is None:
                self.starving_since = now
            if now - self.starving_since >= c.trigger_after_s:
                if cap is None or quote.price > cap:
                    return Action(
                        "wait",
                        "price" if cap is not None else "no_hashprice",
                        f"order gets {format_hashrate(rented)} of "
                        f"{format_hashrate(order.limit_hs)}; market price {_price(quote.price, quote)} "
                        f"is {'above ' if cap is not None else ''}{cap_text}",
                        fields=info,
                    )
                self.starving_since = None
                return Action(
                    "resize",
                    "reprice",
                    f"order gets {format_hashrate(rented)} of "
                    f"{format_hashrate(order.limit_hs)}: price {_price(order.price, quote)} -> "
                    f"{_price(quote.price, quote)}",
                    order.limit_hs,
                    quote.price,
                    fields=info,
                )
        else:
            self.starving_since = None
        running_cost = (
            order.price * Decimal(repr(order.limit_hs)) / PH * Decimal(repr(REFILL_WHEN_LEFT_S)) / DAY_S
        )
        if quote is not None and order.remaining < running_cost:
            amount = self.amount_for(order.price, order.limit_hs, quote, budget_left)
            if amount is None:
                return Action(
                    "none",
                    "budget",
                    f"escrow {format_btc(order.remaining)} BTC running low and the daily budget "
                    "is used up: the order will complete",
                    fields=info,
                )
            return Action(
                "refill",
                "refill",
                f"escrow {format_btc(order.remaining)} BTC covers < {REFILL_WHEN_LEFT_S:g}s: adding "
                f"{format_btc(amount)} BTC",
                amount=amount,
                fields=info,
            )
        return Action(
            "none",
            "covered",
            f"order {format_hashrate(order.limit_hs)} covers the deficit "
            f"{format_hashrate(need)}; delivered {format_hashrate(delivered_hs)}",
            fields=info,
        )


def decimal_text(value: Decimal | None) -> str | None:
    """A decimal as the API and the events show it (exact, as a string), or None."""
    return None if value is None else str(value)
