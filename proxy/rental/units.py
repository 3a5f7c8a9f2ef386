"""Hashrates as operators write them ("120 TH/s") and as the controller computes them (H/s).

Money never passes through here: prices and budgets are ``Decimal`` strings end to end.
Hashrates are physical measurements, so the controller works in float H/s and converts to
the provider's unit (PH/s on NiceHash's SHA256 market) with ``Decimal`` at the API edge.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["UNITS", "format_hashrate", "parse_hashrate"]

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
