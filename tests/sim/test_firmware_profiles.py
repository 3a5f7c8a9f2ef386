"""Each firmware profile does what it claims, against the sim pool directly (no proxy).

Every test names where the behaviour was learned (the profile's ``doc`` has the detail); the
profile is what the proxy is later tested against (tests/e2e/test_firmware_profiles.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from proxy.sim import PROFILES, RigFleet, SimPool
from proxy.sim.firmware import BIP320_MASK

from .conftest import D


@pytest.fixture
def rigs(make_fleet):
    """``rigs(pool, profile, count=2)``: a fleet speaking as that firmware, quick to redial;
    not waited for (some profiles are meant to refuse the pool)."""
    def make(pool: SimPool, profile: Any, count: int = 2, **kwargs: Any):
        kwargs.setdefault("share_interval", 0.05)
        kwargs.setdefault("reconnect_delay", 0.05)
        return make_fleet(pool, count, authorized=False, profile=profile, **kwargs)
    return make


async def _mining(fleet: RigFleet, pool: SimPool, shares: int = 4) -> None:
    await fleet.wait_until(lambda: fleet.authorized == fleet.count, 5, "authorized")
    await pool.wait_until(lambda: pool.accepted >= shares, 5, f"{shares} accepted")


def _methods(pool: SimPool) -> list[list[str]]:
    return [s.methods for s in pool.conn_stats.values()]


def test_the_registry_names_a_source_and_a_one_line_summary_for_every_profile():
    assert set(PROFILES) >= {
        "default", "cgminer", "s21_bits_without_configure", "mask_ffffffff_rolls_1fffe000",
        "configure_min_diff_and_extranonce", "suggest_before_subscribe",
        "difficulty_next_notify", "refuses_e2_over_8", "extranonce_subscribe"}
    for name, p in PROFILES.items():
        assert p.name == name and p.summary and "\n" not in p.summary
        if name != "default":  # each quirk cites a public source file or issue thread
            assert "#" in p.doc or ".c" in p.doc, name
    with pytest.raises(ValueError, match="unknown rig profile"):
        RigFleet("127.0.0.1", 1, 1, profile="antminer-from-mars")


# --- cgminer (ckolivas/cgminer util.c, cgminer.c) ----------------------------------------------

async def test_cgminer_handshake_is_sequential_and_asks_for_every_bit(pool_at_d, rigs):
    """util.c initiate_stratum: mining.configure alone first (mask ffffffff, no
    min-bit-count), then subscribe, then authorize, each after the previous answer."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()
        fleet = await rigs(pool, "cgminer")
        await _mining(fleet, pool)
        stats = next(iter(pool.conn_stats.values()))
        assert stats.methods[:3] == ["mining.configure", "mining.subscribe", "mining.authorize"]
        assert stats.configure_options == {"version-rolling.mask": "ffffffff"}
        assert stats.user_agent.startswith("cgminer/")
        await fleet.drain(5)
        assert not fleet.rejected and fleet.disconnects == 0 and not fleet.refusals


async def test_cgminer_takes_the_line_after_configure_as_its_answer(pool_at_d, rigs):
    """util.c configure_stratum_mining parses the next line as the answer, whatever it is:
    a pool that sends mining.set_version_mask first loses the rig (it redials, forever)."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()
        pool.set_version_mask_before_configure_answer()
        fleet = await rigs(pool, "cgminer")
        reason = "mining.set_version_mask arrived where mining.configure's answer was expected"
        await fleet.wait_until(lambda: fleet.refusals[reason] >= 4 and fleet.disconnects >= 4,
                               5, "refused sessions")
        assert fleet.authorized == 0 and pool.submits == 0
        assert all(m == ["mining.configure"] for m in _methods(pool))
        # the default rig matches the answer by id and takes the same pool in its stride
        other = await rigs(pool, "default")
        await _mining(other, pool)
        assert not other.refusals and other.disconnects == 0


async def test_cgminer_wants_a_granted_mask_and_extranonce2_of_2_to_16(pool_at_d, rigs):
    """util.c: with version rolling built in, no granted mask fails initiate_stratum; an
    extranonce2_size outside 2..16 fails it too (the n2size check)."""
    async with asyncio.timeout(8):
        no_rolling = await pool_at_d("norolling", version_mask=0)
        one = await pool_at_d("e2-1", extranonce2_size=1)
        sixteen = await pool_at_d("e2-16", extranonce2_size=16)
        refused = [await rigs(p, "cgminer") for p in (no_rolling, one)]
        ok = await rigs(sixteen, "cgminer")
        await refused[0].wait_until(lambda: refused[0].refusals[
            "mining.configure did not grant version rolling"] >= 2, 5, "no mask refused")
        await refused[1].wait_until(lambda: refused[1].refusals[
            "extranonce2_size 1 outside 2..16"] >= 2, 5, "e2 1 refused")
        assert no_rolling.submits == one.submits == 0
        await _mining(ok, sixteen)
        assert {len(s.extranonce2) for s in sixteen.shares} == {32}
        assert not ok.refusals


async def test_cgminer_drops_a_pool_silent_for_its_limit(pool_at_d, rigs):
    """cgminer.c stratum_thread: 90 s without a line (scaled here to 0.5 s) = a dead pool.
    A pool sending a job well inside the limit keeps it, even with no shares flowing."""
    async with asyncio.timeout(10):
        pool = await pool_at_d(job_interval=0.1)
        quick = dataclasses.replace(PROFILES["cgminer"], silence_timeout_s=0.5)
        fleet = await rigs(pool, quick)
        await _mining(fleet, pool)
        fleet.pause_mining()
        jobs = pool.jobs_sent
        await pool.wait_until(lambda: pool.jobs_sent >= jobs + 10, 5, "1 s of jobs, no shares")
        assert not fleet.refusals and fleet.disconnects == 0
        pool.stall()
        await fleet.wait_until(lambda: fleet.refusals["pool silent 0.5 s"] >= 2
                               and fleet.disconnects >= 2, 5, "silence noticed")
        assert set(fleet.refusals) == {"pool silent 0.5 s"}
        assert fleet.disconnects <= fleet.refusals["pool silent 0.5 s"]  # each one a refusal


async def test_cgminer_applies_one_queued_difficulty_per_notify(pool_at_d, rigs):
    """util.c parse_diff queues (next_diff, diff_after) and parse_notify applies one: two
    set_difficulty before a notify count from that notify and the next one."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()
        fleet = await rigs(pool, "cgminer", count=1)
        await _mining(fleet, pool, 2)
        rig = fleet.rigs[0]
        assert rig.difficulty == D
        pool.set_difficulty(2 * D)
        pool.set_difficulty(4 * D)
        await fleet.wait_until(lambda: rig.messages_received["mining.set_difficulty"] >= 3, 3,
                               "both difficulties")
        assert rig.difficulty == D  # nothing counts before a notify
        for expected in (2 * D, 4 * D, 4 * D):
            notified = len(rig.notifies)
            pool.broadcast_job()
            await fleet.wait_until(lambda n=notified: len(rig.notifies) > n, 3, "a notify")
            assert rig.difficulty == expected


# --- the other quirks ---------------------------------------------------------------------------

async def test_s21_rolls_bits_it_never_negotiated(pool_at_d, rigs):
    """OCEAN-xyz/datum_gateway#214/#215: no mining.configure, yet every submit carries a
    6th version-bits parameter inside 1fffe000. A pool that never granted a mask rejects
    each of them (code 20, as the sim pool and DATUM do)."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()
        fleet = await rigs(pool, "s21_bits_without_configure")
        await fleet.wait_until(lambda: fleet.authorized == 2 and fleet.answered >= 6, 5, "answers")
        await fleet.drain(5)
        assert all("mining.configure" not in m for m in _methods(pool))
        shares = list(pool.shares)
        assert all(s.version_bits and not s.version_bits & ~BIP320_MASK for s in shares)
        assert {s.reason for s in shares} == {"version_bits_outside_mask"}
        assert fleet.rejected[20] == len(shares) >= 6 and pool.accepted == 0


async def test_mask_ffffffff_rig_rolls_only_1fffe000(pool_at_d, rigs):
    """bitaxeorg/ESP-Miner#54 and #1169 (ESP-Miner stratum_api.c asks for ffffffff, bm1366.c
    rolls mask >> 13 in 16 bits): granted 1fffffff, it still moves only bits 1fffe000.
    It submits only the bits it changed (asic_result_task.c: rolled ^ job version), so a
    server that grants all of ffffffff reads a version without the job's own bits and loses
    every rolled share: a server must grant only bits the rig can use alongside the job's."""
    async with asyncio.timeout(8):
        pool = await pool_at_d(version_mask=0x1FFFFFFF)
        fleet = await rigs(pool, "mask_ffffffff_rolls_1fffe000")
        await _mining(fleet, pool, 20)
        await fleet.drain(5)
        assert {s.configure_options.get("version-rolling.mask")
                for s in pool.conn_stats.values()} == {"ffffffff"}
        assert all(r.masks == [0x1FFFFFFF] and r.version_mask == BIP320_MASK for r in fleet.rigs)
        rolled = [s.version_bits for s in pool.shares if s.version_bits]
        assert rolled and not any(b & ~BIP320_MASK for b in rolled)
        assert all(s.valid for s in pool.shares) and not fleet.rejected

        everything = await pool_at_d("all-bits", version_mask=0xFFFFFFFF)
        greedy = await rigs(everything, "mask_ffffffff_rolls_1fffe000")
        await greedy.wait_until(lambda: greedy.answered >= 20, 5, "answers")
        await greedy.drain(5)
        rolled_shares = [s for s in everything.shares if s.version_bits]
        lucky = [s for s in rolled_shares if s.valid]  # a wrong header meets D 1 time in 256
        assert len(rolled_shares) >= 5 and len(lucky) <= 2
        assert {s.reason for s in rolled_shares if not s.valid} == {"low_difficulty"}
        assert {s.reason for s in everything.shares if not s.version_bits} == {"ok"}


async def test_configure_min_diff_and_extranonce_hold_the_server_to_its_answer(pool_at_d, rigs):
    """OCEAN-xyz/datum_gateway datum_stratum.c logs these requests (min-bit-count 16,
    minimum-difficulty.value); BIP310: true is a promise. A vardiff pool honours the floor
    and set_extranonce; when the operator then forces a lower difficulty the rig counts the
    broken promise (and keeps mining at its floor, a hard limit)."""
    async with asyncio.timeout(8):
        floor = PROFILES["configure_min_diff_and_extranonce"].minimum_difficulty
        assert floor is not None
        pool = await pool_at_d(difficulty=floor / 4, vardiff=True,
                               vardiff_retarget_shares=10_000, vardiff_retarget_s=1e6)
        fleet = await rigs(pool, "configure_min_diff_and_extranonce")
        await _mining(fleet, pool)
        for stats in pool.conn_stats.values():
            assert stats.configure_extensions == ["version-rolling", "minimum-difficulty",
                                                  "subscribe-extranonce"]
            assert stats.configure_options["version-rolling.min-bit-count"] == 16
            assert stats.minimum_difficulty == floor and stats.difficulty == floor
        assert all(r.min_difficulty_honoured and r.extranonce_subscribed for r in fleet.rigs)
        old = {r.extranonce1 for r in fleet.rigs}
        pool.send_set_extranonce()
        await fleet.wait_until(lambda: not old & {r.extranonce1 for r in fleet.rigs}, 3,
                               "new extranonce1 in use")
        accepted = pool.accepted
        await pool.wait_until(lambda: pool.accepted >= accepted + 4, 5, "mining after it")
        assert not fleet.violations
        pool.set_difficulty(floor / 2)
        await fleet.wait_until(lambda: sum(fleet.violations.values()) == 2, 3, "violations")
        assert all(r.difficulty == floor for r in fleet.rigs)
        await fleet.drain(5)
        assert not fleet.rejected and fleet.disconnects == 0


async def test_configure_min_diff_refused_by_a_fixed_pool_is_no_violation(pool_at_d, rigs):
    """A pool that cannot promise a floor answers false (DATUM does); then a lower
    difficulty is no broken promise, and set_extranonce unasked-for is (when it was asked)."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()  # fixed difficulty: answers minimum-difficulty false
        fleet = await rigs(pool, "configure_min_diff_and_extranonce")
        await _mining(fleet, pool)
        assert not any(r.min_difficulty_honoured for r in fleet.rigs)
        pool.set_difficulty(D / 2)
        await fleet.wait_until(lambda: all(r.messages_received["mining.set_difficulty"] >= 2
                                           for r in fleet.rigs), 3, "lower difficulty")
        assert not fleet.violations


async def test_suggest_difficulty_comes_first_and_a_vardiff_pool_uses_it(pool_at_d, rigs):
    """stratum-mining/stratum#505: WhatsMiner starts with mining.suggest_difficulty. The
    sim pool answers it in any state and, with vardiff, starts the connection there."""
    async with asyncio.timeout(8):
        suggested = PROFILES["suggest_before_subscribe"].suggest_difficulty
        pool = await pool_at_d(vardiff=True, vardiff_retarget_shares=10_000,
                               vardiff_retarget_s=1e6)
        fleet = await rigs(pool, "suggest_before_subscribe")
        await _mining(fleet, pool)
        for stats in pool.conn_stats.values():
            assert stats.methods[:4] == ["mining.suggest_difficulty", "mining.configure",
                                         "mining.subscribe", "mining.authorize"]
            assert stats.suggested_difficulty == suggested == stats.difficulty
        assert {s.difficulty for s in pool.shares} == {suggested}
        await fleet.drain(5)
        assert not fleet.rejected and fleet.disconnects == 0


async def test_difficulty_counts_only_from_the_next_notify(pool_at_d, rigs):
    """shufps/ESP-Miner-NerdQAxePlus#511: set_difficulty is acknowledged but the old one is
    used until the next notify. The pool credits those shares at the job's difficulty (the
    grace ckpool gives), so none is rejected; the default rig switches at once."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()
        late = await rigs(pool, "difficulty_next_notify")
        prompt = await rigs(pool, "default")
        await _mining(late, pool)
        pool.set_difficulty(4 * D)
        await prompt.wait_until(lambda: all(r.difficulty == 4 * D for r in prompt.rigs), 3,
                                "default rig at the new difficulty")
        submitted = late.submitted
        await late.wait_until(lambda: late.accepted >= submitted + 4, 5, "late rigs mining")
        assert all(r.difficulty == D for r in late.rigs)  # still the old one: no notify yet
        pool.broadcast_job()
        await late.wait_until(lambda: all(r.difficulty == 4 * D for r in late.rigs), 3,
                              "next notify applies it")
        await pool.wait_until(lambda: sum(s.difficulty == 4 * D for s in pool.shares) >= 8, 5,
                              "shares at the new difficulty")
        for fleet in (late, prompt):
            await fleet.drain(5)
            assert not fleet.rejected
        assert {s.difficulty for s in pool.shares} == {D, 4 * D}


async def test_refuses_an_extranonce2_size_over_8(pool_at_d, rigs):
    """stratum-mining/stratum#1861: WhatsMiners cannot work with extranonce2_size > 8."""
    async with asyncio.timeout(8):
        wide = await pool_at_d("wide", extranonce2_size=12)
        eight = await pool_at_d("eight", extranonce2_size=8)
        refused = await rigs(wide, "refuses_e2_over_8")
        fine = await rigs(eight, "refuses_e2_over_8")
        await refused.wait_until(lambda: refused.refusals["extranonce2_size 12 outside 2..8"]
                                 >= 4 and refused.disconnects >= 4, 5, "refusals")
        assert wide.submits == 0
        await _mining(fine, eight)
        assert not fine.refusals and fine.disconnects == 0


@pytest.mark.parametrize("profile, options", [("extranonce_subscribe", {}),
                                              ("default", {"extranonce_subscribe": True})])
async def test_extranonce_subscribe_follows_set_extranonce_from_the_next_notify(
        pool_at_d, rigs, profile, options):
    """NiceHash's extranonce.subscribe spec: subscribe, then the new extranonce1 (and size)
    from the next notify on (NerdQAxe++ sends it, shufps/qaxe#33); the default rig does the
    same when its fleet subscribes."""
    async with asyncio.timeout(8):
        pool = await pool_at_d()
        fleet = await rigs(pool, profile, count=4, **options)
        await _mining(fleet, pool)
        assert all(m[2] == "mining.extranonce.subscribe" for m in _methods(pool))
        old = {r.index: r.extranonce1 for r in fleet.rigs}
        pool.send_set_extranonce(size=6, notify=False)
        await fleet.wait_until(lambda: fleet.set_extranonce_received == 4, 3, "received")
        assert {r.index: r.extranonce1 for r in fleet.rigs} == old  # not before a notify
        pool.broadcast_job()
        await fleet.wait_until(lambda: all(r.extranonce1 != old[r.index]
                                           and r.extranonce2_size == 6 for r in fleet.rigs),
                               3, "applied at the notify")
        accepted = pool.accepted
        await pool.wait_until(lambda: pool.accepted >= accepted + 8, 5, "mining after it")
        await fleet.drain(5)
        assert not fleet.rejected and fleet.disconnects == 0
        latest = list(pool.shares)[-4:]
        assert {s.extranonce1 for s in latest} <= {r.extranonce1.hex() for r in fleet.rigs}
        assert all(len(s.extranonce2) == 12 for s in latest)
