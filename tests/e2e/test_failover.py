"""Issue 3 end to end: invisible failover and failback with a fleet of sim rigs."""

from __future__ import annotations

import asyncio
import time

from proxy.sim import wait_until
from tests.farm_fixture import check_accounting, pool_view, quiesce

RIGS = 100


async def _two_pool_farm(farm, *, primary_kwargs=None, backup_kwargs=None, fleet_kwargs=None, **proxy):
    primary = await farm.pool("primary", **(primary_kwargs or {}))
    backup = await farm.pool("backup", **(backup_kwargs or {}))
    proxy.setdefault("failback_hold_s", 60)
    svc = await farm.start_proxy(**proxy)
    fleet = await farm.start_fleet(RIGS, **(fleet_kwargs or {}))
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 10,
                           "all rigs on the primary's job")
    return primary, backup, svc, fleet


def _assert_invisible(fleet, *pools):
    assert fleet.disconnects == 0
    assert fleet.pending == 0
    assert set(fleet.rejected) <= {21}  # a share racing a clean job may be stale, nothing else
    for r in fleet.rigs:
        assert r.reconnect_requests == 0 and r.set_extranonce_received == 0
    for pool in pools:
        bad = [s for s in pool.shares if not s.valid]
        assert bad == [], bad[:3]


def _failover_ms(fleet, t0: float, tag: bytes) -> float:
    times = fleet.first_notify_after(t0, tag)
    assert all(t is not None for t in times)
    return (max(times) - t0) * 1000


async def test_reset_moves_every_rig_to_the_backup_job(farm):
    primary, backup, svc, fleet = await _two_pool_farm(farm)
    await fleet.wait_until(lambda: fleet.accepted >= 200, 15, "mining on the primary")
    t0 = time.monotonic()
    primary.reset_all()
    await primary.refuse()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 5,
                           "all rigs on the backup's job")
    print(f"\nfailover on reset: last of {RIGS} rigs on the backup's job after "
          f"{_failover_ms(fleet, t0, b'backup'):.1f} ms")
    accepted = fleet.accepted
    await fleet.wait_until(lambda: fleet.accepted >= accepted + 100, 15, "mining on the backup")
    await fleet.drain(10)
    _assert_invisible(fleet, primary, backup)
    view = pool_view(svc, "primary")
    assert view["state"] == "down" and view["last_error"]  # reset, then refused on redial
    # every forwarded share is accounted: accepted + rejected + lost (+ timeouts), and the
    # rigs' own tallies are the proxy's
    await quiesce(farm)
    check_accounting(farm, exact_pools=("backup",))
    switch = svc.events.recent(kind="pool_switch")[-1]
    assert switch["to_pools"] == ["backup"] and "reset" in switch["reason"]
    assert switch["rigs_moved"] == RIGS


async def test_silent_primary_is_left_within_the_window(farm):
    primary, backup, svc, fleet = await _two_pool_farm(farm, silent_timeout_s=1.5)
    await fleet.wait_until(lambda: fleet.accepted >= 100, 15, "mining on the primary")
    t0 = time.monotonic()
    primary.stall()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 6,
                           "all rigs on the backup's job")
    elapsed = _failover_ms(fleet, t0, b"backup")
    print(f"\nfailover on silent stall (window 1.5 s): {elapsed:.0f} ms")
    assert elapsed < 1500 + 1000
    await fleet.drain(10)
    _assert_invisible(fleet, backup)
    v = pool_view(svc, "primary")
    assert v["timeouts"] >= 1 and "silent" in v["last_error"]
    await quiesce(farm)
    check_accounting(farm, exact_pools=("backup",))  # every forwarded share accounted exactly once
    # rigs were answered at once even while the primary was silent
    assert fleet.pending == 0


async def test_failback_after_hold_down_and_no_flapping(farm):
    primary, backup, svc, fleet = await _two_pool_farm(farm, failback_hold_s=3.0)
    primary.reset_all()
    await primary.refuse()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 5, "on backup")
    # flap: up for 1 s, down again, several times (faster than the 3 s hold-down)
    for _ in range(3):
        await primary.resume()
        await wait_until(lambda: pool_view(svc, "primary")["state"] == "healthy", 5, what="primary up")
        await asyncio.sleep(1.0)  # the flapping pool's up-time (scenario timing, not synchronisation)
        assert fleet.rigs_with_job_containing(b"backup") == RIGS
        primary.reset_all()
        await primary.refuse()
        await wait_until(lambda: pool_view(svc, "primary")["state"] == "down", 5, what="primary down")
    t_up = time.monotonic()
    await primary.resume()
    await wait_until(lambda: pool_view(svc, "primary")["state"] == "healthy", 5, what="primary up")
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 10, "failback")
    waited = time.monotonic() - t_up
    print(f"\nfailback after {waited:.2f} s (hold-down 3 s)")
    assert waited >= 3.0
    switches = svc.events.recent(kind="pool_switch")
    # startup, failover, failback: the flaps never moved the farm
    assert [s["to_pools"] for s in switches] == [["primary"], ["backup"], ["primary"]]
    await fleet.drain(10)
    _assert_invisible(fleet, primary, backup)


async def test_both_pools_down_then_one_back(farm):
    primary, backup, svc, fleet = await _two_pool_farm(farm, keepalive_s=1.0)
    primary.reset_all()
    await primary.refuse()
    backup.reset_all()
    await backup.refuse()
    await wait_until(lambda: not svc.view.active_pools(), 5, what="no pool active")
    received = {id(r): sum(r.messages_received.values()) for r in fleet.rigs}
    # rigs keep hearing from the proxy (keepalive) and keep getting answers
    await fleet.wait_until(lambda: all(sum(r.messages_received.values()) > received[id(r)] + 1
                                       for r in fleet.rigs), 5, "keepalive reaches every rig")
    assert fleet.connected == RIGS
    await backup.resume()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 10, "resumed")
    accepted = fleet.accepted
    await fleet.wait_until(lambda: fleet.accepted >= accepted + 50, 15, "mining again")
    await fleet.drain(10)
    assert fleet.disconnects == 0 and fleet.pending == 0
    bad = [s for s in backup.shares if not s.valid]
    assert bad == []
    lost = pool_view(svc, "primary")["lost_total"] + pool_view(svc, "backup")["lost_total"]
    print(f"\nshares answered to rigs but undeliverable while no pool was up: {lost}")


async def test_pool_set_extranonce_and_reconnect_mid_run(farm):
    primary, backup, svc, fleet = await _two_pool_farm(farm)
    await fleet.wait_until(lambda: fleet.accepted >= 100, 15, "mining")
    primary.send_set_extranonce()
    accepted = primary.accepted
    await wait_until(lambda: primary.accepted >= accepted + 100, 15, what="mining after set_extranonce")
    primary.send_reconnect()
    await wait_until(lambda: pool_view(svc, "primary")["connections"] == 1 and primary.total_connections >= 2,
                     10, what="the proxy reconnected to the primary")
    accepted = primary.accepted
    await wait_until(lambda: primary.accepted >= accepted + 100, 15, what="mining after the reconnect")
    await fleet.drain(10)
    assert svc.view.active_pools() == ["primary"]
    _assert_invisible(fleet, primary)
    # set_extranonce: jobs sent before it and submitted after it are the only pool rejects allowed
    assert pool_view(svc, "primary")["rejected_total"] <= 0.05 * pool_view(svc, "primary")["forwarded"]


async def test_version_rolling_across_pools_with_different_masks(farm):
    primary, backup, svc, fleet = await _two_pool_farm(
        farm, primary_kwargs={"version_mask": 0x1FFFE000}, backup_kwargs={"version_mask": 0x00FFE000})
    await fleet.wait_until(lambda: fleet.accepted >= 100, 15, "mining")
    assert {r.version_mask for r in fleet.rigs} == {0x1FFFE000}
    primary.reset_all()
    await primary.refuse()
    await fleet.wait_until(lambda: all(r.version_mask == 0x00FFE000 for r in fleet.rigs), 5,
                           "set_version_mask reached every rig")
    accepted = backup.accepted
    await wait_until(lambda: backup.accepted >= accepted + 100, 15, what="mining on the backup")
    await fleet.drain(10)
    rolled = [s for s in backup.shares if s.version_bits]
    assert rolled and all(s.valid for s in backup.shares)
    assert all(s.version_bits & ~0x00FFE000 == 0 for s in rolled)
    _assert_invisible(fleet, backup)
