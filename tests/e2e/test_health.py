"""Issue 4 end to end: latency percentiles, the SLO, reject-driven degradation."""

from __future__ import annotations

from proxy.sim import wait_until
from tests.farm_fixture import pool_view


async def test_latency_percentiles_track_injected_delay_and_slo_moves_hashrate(farm):
    primary = await farm.pool("primary", answer_delay=0.080)
    await farm.pool("backup")
    svc = await farm.start_proxy(latency_slo_ms=150, health_window_s=2.0, min_answers_for_health=20,
                                 failback_hold_s=2.0)
    fleet = await farm.start_fleet(30, share_interval=0.3)
    await wait_until(lambda: pool_view(svc, "primary")["latency_ms"]["window_count"] >= 60, 20,
                     what="60 answers in the health window")
    lat = pool_view(svc, "primary")["latency_ms"]
    print(f"\ninjected 80 ms: p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms")
    # bucketed percentiles: within the 75..100 ms bucket around the injected delay
    assert 70 <= lat["p50"] <= 100 and 70 <= lat["p99"] <= 110
    assert svc.view.active_pools() == ["primary"]
    # the pool slows past the SLO: hashrate moves to the backup with the reason
    primary.set_answer_delay(0.300)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == 30, 15, "moved")
    health = [e for e in svc.events.recent(kind="pool_health") if e["pool"] == "primary"][-1]
    assert health["state"] == "degraded" and "SLO" in health["reason"]
    # recovered: after its sit-out window and the hold-down the farm goes back
    primary.set_answer_delay(0.0)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == 30, 20, "back")
    await fleet.drain(10)
    assert fleet.disconnects == 0 and fleet.pending == 0


async def test_pool_rejecting_half_the_shares_is_degraded_and_left(farm):
    primary = await farm.pool("primary", reject_ratio=0.5, seed=3)
    await farm.pool("backup")
    svc = await farm.start_proxy(max_reject_ratio=0.3, min_answers_for_health=20)
    fleet = await farm.start_fleet(30, share_interval=0.3)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == 30, 20, "moved")
    health = [e for e in svc.events.recent(kind="pool_health") if e["pool"] == "primary"][-1]
    assert health["state"] == "degraded" and "rejecting" in health["reason"]
    switch = svc.events.recent(kind="pool_switch")[-1]
    assert switch["to_pools"] == ["backup"] and "rejecting" in switch["reason"]
    await fleet.drain(10)
    # the rigs never saw the pool's rejects: locally valid shares were answered true
    assert set(fleet.rejected) <= {21}
    assert pool_view(svc, "primary")["rejected_total"] > 0
    assert primary.rejected_total > 0
