"""Meters behind the hashrate figures: right from the first minute, not only after an hour."""

from __future__ import annotations

import pytest

from proxy.core.stats import RateMeter


@pytest.mark.parametrize("seconds", [10, 60, 600, 3600])
def test_rate_meter_reads_the_true_rate_at_any_age(seconds):
    meter = RateMeter(tau=300.0, start=1000.0)
    for t in range(1, seconds + 1):
        meter.add(2000.0, 1000.0 + t)  # 2,000 hashes each second
    assert meter.rate(1000.0 + seconds) == pytest.approx(2000.0, rel=0.01)


def test_rate_meter_follows_a_drop_and_ignores_a_lone_early_share():
    meter = RateMeter(tau=300.0, start=0.0)
    for t in range(1, 1201):
        meter.add(1000.0, float(t))
    # the rig stops: the rate decays instead of holding the last value
    assert meter.rate(1200.0 + 300.0) == pytest.approx(1000.0 / 2.718281828, rel=0.05)
    fresh = RateMeter(tau=300.0, start=0.0)
    fresh.add(5000.0, 0.001)  # a share a millisecond after connecting is not 5 MH/s
    assert fresh.rate(0.001) == pytest.approx(5000.0, rel=0.01)
    assert RateMeter(start=5.0).rate(10.0) == 0.0
