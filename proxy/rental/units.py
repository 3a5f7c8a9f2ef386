"""Hashrates as operators write them ("120 TH/s") and as the controller computes them (H/s),
and money as people read it.

Money is never computed here: prices and budgets are ``Decimal`` strings end to end, and the
formatters below only shorten them for messages. Hashrates are physical measurements, so the
controller works in float H/s and converts to the provider's unit (PH/s on NiceHash's SHA256
market) with ``Decimal`` at the API edge.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

__all__ = ["UNITS", "format_btc", "format_hashrate", "format_price", "parse_hashrate", "price_decimals"]

SATOSHI_PLACES = 8

UNITS: dict[str, int] = {
    "H/s": 1,
    "kH/s": 10**3,
    "KH/s": 10**3,
    "MH/s": 10**6,
    "GH/s": 10**9,
    "TH/s": 10**12,
    "PH/s": 10**15,
    "EH/s": 10**18,
}
_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]+/s)\s*$")


def parse_hashrate(text: str) -> Decimal:
    """``"120 TH/s"`` -> ``Decimal(120e12)`` H/s; ValueError with the accepted units otherwise."""
    match = _RE.match(text) if isinstance(text, str) else None
    if not match or match.group(2) not in UNITS:
        raise ValueError(
            f"expected a number and a unit ({', '.join(u for u in UNITS if u != 'KH/s')}), got {text!r}"
        )
    try:
        value = Decimal(match.group(1)) * UNITS[match.group(2)]
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if value <= 0:
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def format_hashrate(hs: float | Decimal | None) -> str:
    if hs is None:
        return "unknown"
    value = float(hs)
    for unit in ("EH/s", "PH/s", "TH/s", "GH/s", "MH/s", "kH/s"):
        if abs(value) >= UNITS[unit]:
            return f"{value / UNITS[unit]:.3g} {unit}"
    return f"{value:.3g} H/s"


def format_btc(value: Decimal | str | float | None) -> str:
    """An amount of BTC to the satoshi, trailing zeros dropped: ``"0.00420000"`` -> ``"0.0042"``."""
    return format_price(value, None)


def price_decimals(step: Decimal | None) -> int | None:
    """The decimals a marketplace quotes prices with, from its price step (NiceHash's
    ``priceDownStep`` in BTC/PH/day: 0.0001 -> 4); None when it does not say."""
    if step is None or not step.is_finite() or step == 0:
        return None
    return min(max(0, -abs(step).normalize().as_tuple().exponent), SATOSHI_PLACES)  # type: ignore[operator]


def format_price(value: Decimal | str | float | None, decimals: int | None) -> str:
    """A price (or amount) in BTC as a marketplace shows it: at least ``decimals`` places (its
    precision), more only where the value has them (never rounding a configured price up to
    the next step), at most 8 (a satoshi); ``2000.000000000000`` -> ``2000``."""
    if value is None:
        return "unknown"
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not d.is_finite():
        return str(value)
    d = d.quantize(Decimal(1).scaleb(-SATOSHI_PLACES), ROUND_HALF_UP).normalize()
    places = max(-d.as_tuple().exponent, decimals or 0, 0)  # type: ignore[operator]
    return f"{d:.{places}f}"
