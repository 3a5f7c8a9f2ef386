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


def test_large_farm_totals_are_built_by_the_tick_and_match_the_exact_sum(monkeypatch):
    from proxy.core import rigstats, view
    from tests.core.harness import FakeRig, connect, make_core

    monkeypatch.setattr(rigstats, "EXACT_UP_TO", 10)
    monkeypatch.setattr(view, "EXACT_UP_TO", 10)
    monkeypatch.setattr(rigstats, "SLICE", 7)
    core, io, clock = make_core()
    for conn in list(io.dialed):
        connect(core, conn, clock).handshake()
    rigs = [FakeRig(core, clock, peer=f"10.0.0.{i}:4000") for i in range(30)]
    for rig in rigs:
        rig.setup()
    now = clock.now
    for i, session in enumerate(core.rigs.values()):
        session.hashrate.add(1000.0 * (i + 1), now - 10)
    expected_total, expected_working = rigstats.exact(core.rigs.values(), now)
    assert expected_working == 30 and expected_total > 0
    # before any pass the large-farm view has nothing yet; 30 rigs / 7 a tick = 5 ticks
    assert view.CoreView(core).status(now)["hashrate"] == 0.0
    for _ in range(5):
        core.tick(now)
    status = view.CoreView(core).status(now)
    assert status["hashrate"] == pytest.approx(expected_total)
    assert status["rigs_working"] == 30 and status["rigs_connected"] == 30
    primary = next(v for v in view.CoreView(core).pools(now) if v["name"] == "primary")
    assert primary["hashrate"] == pytest.approx(expected_total)
    # a rig that leaves drops out at the next complete pass
    gone = next(iter(core.rigs.values()))
    gone_rate = gone.hashrate.rate(now)
    core.close_rig(gone, "test", now)
    for _ in range(5):
        core.tick(now)
    assert view.CoreView(core).status(now)["hashrate"] == pytest.approx(expected_total - gone_rate)
