"""What the hashrate earns, from the pool's own jobs: network difficulty, block value, hashprice.

* network difficulty = diff1 target / the target ``nbits`` encodes (the job's header field);
* block value = the sum of the coinbase outputs of the job's template
  (``proxy.stratum.coinbase``): subsidy plus the fees the pool put in;
* hashprice = block value / (difficulty x 2^32) x 86,400 x 10^15, in BTC per PH/s per day:
  a difficulty-D block takes D x 2^32 hashes on average, so one PH/s finds
  86,400 x 10^15 / (D x 2^32) blocks' worth a day (before the pool's fee and luck);
* expected earnings of a hashrate (H/s) = hashrate / 10^15 x hashprice, BTC per day.

``HashpriceMeter`` holds one pool's figure.  It is fed every new job (``Upstreams`` does it
where a job arrives, never on the share path) and parses only when the template, the
extranonce size or nbits changed, so a pool with one connection per rig costs one parse per
template, not one per connection.  It never raises: a job it cannot read leaves the figure
unknown with the reason.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

from ..stratum.coinbase import coinbase_from_job
from ..stratum.work import DIFF1_TARGET

log = logging.getLogger("proxy.core")

SAT_PER_BTC = 100_000_000
DAY_S = 86_400
PH = 10**15
HASHES_PER_DIFF1 = 2**32


def nbits_difficulty(nbits: int) -> Fraction | None:
    """The network difficulty ``nbits`` encodes, exactly; None for a negative, zero or
    overflowing compact target (no real block has one)."""
    exponent, mantissa = nbits >> 24, nbits & 0x007FFFFF
    if nbits & 0x00800000 or mantissa == 0:
        return None
    target = (mantissa >> (8 * (3 - exponent)) if exponent <= 3
              else mantissa << (8 * (exponent - 3)))
    if target == 0 or target >= 1 << 256:
        return None
    return Fraction(DIFF1_TARGET, target)


def hashprice(value_sat: int, difficulty: Fraction) -> Fraction:
    """BTC per PH/s per day: block value / (difficulty x 2^32) x 86,400 x 10^15."""
    return Fraction(value_sat, SAT_PER_BTC) / (difficulty * HASHES_PER_DIFF1) * DAY_S * PH


def expected_btc_per_day(hashrate_hs: float, price: float) -> float:
    """What ``hashrate_hs`` earns a day at ``price`` BTC per PH/s per day."""
    return hashrate_hs / PH * price


class HashpriceMeter:
    """One pool's figures from its latest job; see the module docstring."""

    __slots__ = ("_key", "difficulty", "value_sat", "price", "reason", "at")

    def __init__(self) -> None:
        self._key: tuple[bytes, bytes, int, int] | None = None
        self.difficulty: Fraction | None = None
        self.value_sat: int | None = None
        self.price: Fraction | None = None
        self.reason = "no job from the pool yet"
        self.at: float | None = None  # core time of the latest job the figures hold for

    def job(self, coinb1: bytes, coinb2: bytes, extranonce_size: int, nbits: int, now: float) -> None:
        """A new job arrived: recompute if its template differs from the last one."""
        self.at = now
        key = (coinb1, coinb2, extranonce_size, nbits)
        if key == self._key:
            return
        self._key = key
        try:
            self._compute(coinb1, coinb2, extranonce_size, nbits)
        except Exception as exc:  # a bug here must never cost the pool its job
            log.exception("hashprice: cannot read a job")
            self.difficulty = self.value_sat = self.price = None
            self.reason = f"internal error reading the job: {exc}"

    def _compute(self, coinb1: bytes, coinb2: bytes, extranonce_size: int, nbits: int) -> None:
        self.difficulty = nbits_difficulty(nbits)
        coinbase = coinbase_from_job(coinb1, coinb2, extranonce_size)
        self.value_sat = coinbase.value_sat
        self.price = None
        if self.difficulty is None:
            self.reason = f"nbits {nbits:08x} is not a valid target"
        elif coinbase.value_sat is None:
            self.reason = f"coinbase does not parse: {coinbase.reason}"
        else:
            self.price = hashprice(coinbase.value_sat, self.difficulty)
            self.reason = ""

    def view(self, now: float, hashrate_hs: float | None = None) -> dict[str, Any]:
        """Plain figures for the API: floats (estimates), the value also in exact satoshi."""
        price = float(self.price) if self.price is not None else None
        return {
            "btc_per_ph_day": price,
            "network_difficulty": float(self.difficulty) if self.difficulty is not None else None,
            "block_value_sat": self.value_sat,
            "block_value_btc": self.value_sat / SAT_PER_BTC if self.value_sat is not None else None,
            "age_s": round(now - self.at, 3) if self.at is not None else None,
            "reason": self.reason,
            "expected_btc_per_day": (expected_btc_per_day(hashrate_hs, price)
                                     if price is not None and hashrate_hs is not None else None),
        }
