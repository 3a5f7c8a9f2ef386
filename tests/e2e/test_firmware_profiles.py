"""Issue 14: every firmware profile mines through the proxy across a primary-pool reset.

The farm is a realistic one: the primary is a vardiff pool (it raises the difficulty of the
proxy's aggregate connection while the rigs mine, as ckpool would), the backup has a fixed,
higher difficulty and a narrower version mask, so the failover carries a set_difficulty and
a set_version_mask as well as the new job.  Each profile is a firmware family from the
corpus (``proxy.sim.firmware``; its ``doc`` names the public source the behaviour was
learned from), and its rigs count for themselves: 0 disconnects, 0 unanswered submits,
no rejects but stale ones, no session their firmware would have given up, no broken promise.

Profiles today's proxy fails are marked xfail(strict=True) with what the proxy does wrong:
they turn into failures the day the proxy is fixed, and the mark is then removed.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from proxy.sim import PROFILES

D = 2.0 ** -24
RIGS = 6
SHARES_PER_S = 5.0  # per rig at D: the primary's aggregate connection runs at 30/s
PRIMARY_MASK, BACKUP_MASK = 0x1FFFE000, 0x00FFE000

FAILS_TODAY: dict[str, str] = {}


def _profiles() -> list:
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=FAILS_TODAY[name]))
            if name in FAILS_TODAY else name for name in PROFILES]


def _spoiled(fleet) -> bool:
    """Something the rigs would notice already happened: stop waiting, the asserts say what."""
    return bool(fleet.disconnects or fleet.refusals or fleet.violations or fleet.lost
                or set(fleet.rejected) - {21})


def _assert_unnoticed(fleet, profile: str, in_flight_s: float = 0.0) -> None:
    """``in_flight_s``: while the rigs still mine, a share sent less than this long ago may be
    waiting for its answer (in flight, not unanswered); after ``drain`` nothing may wait."""
    status = f"{profile}: {fleet.status()} rejects={fleet.reject_messages}"
    assert fleet.disconnects == 0 and not fleet.refusals, status
    assert fleet.unanswered(older_than=in_flight_s) == 0, status
    assert set(fleet.rejected) <= {21}, status  # a share racing a clean job may be stale
    assert not fleet.violations, status
    assert fleet.reconnect_requests == 0 and fleet.set_extranonce_received == 0, status


@pytest.mark.parametrize("profile", _profiles())
async def test_profile_mines_across_a_primary_reset(farm, profile):
    """The profile's own docstring (PROFILES[profile].doc) says where each behaviour comes
    from: cgminer (ckolivas/cgminer util.c, cgminer.c), S21 without configure
    (OCEAN-xyz/datum_gateway#214), ESP-Miner's mask (bitaxeorg/ESP-Miner#54, #1169),
    BIP310 extensions (datum_stratum.c, Apollo-Miner-Binaries#19), WhatsMiner's early
    suggest_difficulty (stratum-mining/stratum#505) and extranonce2 limit (#1861),
    NerdQAxe's late difficulty (ESP-Miner-NerdQAxePlus#511), NiceHash's xsub spec."""
    async with asyncio.timeout(25):
        primary = await farm.pool("primary", vardiff=True, vardiff_target_interval_s=0.1,
                                  vardiff_retarget_shares=20, vardiff_max=2.0 ** -20,
                                  version_mask=PRIMARY_MASK)
        backup = await farm.pool("backup", difficulty=2 * D, version_mask=BACKUP_MASK)
        await farm.start_proxy(failback_hold_s=60)
        fleet = await farm.start_fleet(RIGS, profile=profile, hashrate=D * 2**32 * SHARES_PER_S,
                                 reconnect_delay=0.1)
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 5,
                               "all rigs on the primary's job")
        # the pool raises the aggregate connection's difficulty; rigs mine on at the new one
        await primary.wait_until(lambda: any(s.retargets for s in primary.open_stats())
                                 or _spoiled(fleet), 8, "the primary raising the difficulty")
        _assert_unnoticed(fleet, profile, in_flight_s=1.0)
        assert all(s.difficulty > D for s in primary.open_stats() if s.retargets)
        accepted = primary.accepted
        await primary.wait_until(lambda: primary.accepted >= accepted + 10 or _spoiled(fleet),
                                 5, "mining at the raised difficulty")

        primary.reset_all()
        await primary.refuse()
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 5,
                               "all rigs on the backup's job")
        if profile == "s21_bits_without_configure":
            # it rolls the BIP320 bits (1fffe000) whatever the pool; the backup allows only
            # 00ffe000, so most of its work cannot be sent there: the rigs are answered (no
            # reject: firmware would leave), the pool gets what its mask allows, and the
            # rest is counted (outside_pool_mask)
            accepted = fleet.accepted
            await fleet.wait_until(lambda: fleet.accepted >= accepted + 30 or _spoiled(fleet), 8,
                                   "mining on the backup")
            totals = farm.proxy.view.totals()
            assert totals["outside_pool_mask"] > 0, totals
        else:
            accepted = backup.accepted
            await backup.wait_until(lambda: backup.accepted >= accepted + 10 or _spoiled(fleet), 8,
                                    "mining on the backup")
        await fleet.drain(5)

        _assert_unnoticed(fleet, profile)
        for pool in (primary, backup):
            bad = [(s.reason, s.version_bits) for s in pool.shares if not s.valid]
            assert bad == [], (pool.name, bad[:3])
        # a rig is never granted version bits the pool it mines for does not allow
        for rig in fleet.rigs:
            assert all(not m & ~PRIMARY_MASK for m in rig.masks), (rig.worker, rig.masks)
            if rig.masks:
                assert not rig.masks[-1] & ~BACKUP_MASK, (rig.worker, rig.masks)


async def test_cgminer_keeps_hearing_the_proxy_while_no_pool_is_up(farm):
    """cgminer.c stratum_thread drops a pool after 90 s without a line; the proxy's
    keepalive (30 s by default) must reach rigs even when every pool is down and no share
    flows. Scaled together by 1/30 (pools' jobs and the keepalive every 1 s, cgminer's limit
    3 s): with mining paused and no pool up each rig keeps hearing the proxy for over 3 s,
    and gives no session up."""
    async with asyncio.timeout(15):
        await farm.pool("primary", job_interval=1.0)
        await farm.pool("backup", job_interval=1.0)
        await farm.start_proxy(keepalive_s=1.0, failback_hold_s=60)
        scaled = dataclasses.replace(PROFILES["cgminer"], silence_timeout_s=3.0)
        fleet = await farm.start_fleet(RIGS, profile=scaled)
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 5,
                               "all rigs on the primary's job")
        await fleet.drain(5)
        for pool in farm.pools.values():
            pool.reset_all()
            await pool.refuse()
        heard = {id(r): r.messages_received["mining.notify"] for r in fleet.rigs}
        # four notifies: a failover's (the backup may be up for a moment) and three
        # keepalives, a second or more apart: longer than the (scaled) limit in all
        await fleet.wait_until(lambda: all(r.messages_received["mining.notify"] >= heard[id(r)] + 4
                                           for r in fleet.rigs) or _spoiled(fleet), 10,
                               "keepalives per rig")
        _assert_unnoticed(fleet, "cgminer")
