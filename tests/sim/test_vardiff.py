"""The sim pool's vardiff, learned from ckpool's stratifier (add_submit, parse_submit,
suggest_diff): the controller on a fake clock, then a pool retargeting real connections,
crediting each share at the difficulty its job was sent at, and rejecting low ones."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.sim import RawClient, SimPool, SimPoolConfig, Vardiff, VardiffConfig
from proxy.stratum import messages, work

from .conftest import D

LOOSE = dict(vardiff_retarget_shares=10_000, vardiff_retarget_s=1e6)  # never retargets itself


# --- the controller on a fake clock ------------------------------------------------------------

def _feed(vd: Vardiff, t: float, every: float, count: int) -> tuple[float, list[float]]:
    """``count`` shares at the controller's current difficulty, ``every`` s apart."""
    changes = []
    for _ in range(count):
        t += every
        new = vd.on_share(vd.difficulty, t)
        if new is not None:
            changes.append(new)
    return t, changes


def test_fast_shares_raise_the_difficulty_to_the_target_rate():
    cfg = VardiffConfig(target_interval_s=1.0, minimum=1.0, maximum=1e9)
    vd = Vardiff(cfg, 100.0, now=0.0)
    t, changes = _feed(vd, 0.0, 0.125, 71)  # 8 shares/s: below the 72-share gate
    assert changes == [] and t < 72.0  # and well inside the 72 s time gate
    t, changes = _feed(vd, t, 0.125, 1)  # the 72nd share opens the gate
    assert len(changes) == 1 and 600 < changes[0] < 1000  # ~8x: one share per second
    # at the new difficulty the same hashrate gives ~1 share/s: inside the hysteresis band
    t, changes = _feed(vd, t, 1.0 * changes[0] / 800, 150)
    assert changes == []


def test_few_shares_lower_it_but_not_on_the_first_share_after_a_quiet_spell():
    cfg = VardiffConfig(target_interval_s=1.0, minimum=1.0, maximum=1e9)
    vd = Vardiff(cfg, 800.0, now=0.0)
    t, changes = _feed(vd, 0.0, 8.0, 8)  # 1 share per 8 s at 800: ~100 difficulty/s
    assert changes == []  # 64 s: inside the 72 s gate (and far below 72 shares)
    t, changes = _feed(vd, t, 8.0, 1)  # 72 s: the time gate opens
    assert len(changes) == 1 and 60 < changes[0] < 160  # about one share per second
    # a connection silent for 10 minutes is not lowered on the share it comes back with
    vd2 = Vardiff(cfg, 800.0, now=0.0)
    assert vd2.on_share(800.0, 600.0) is None
    t, changes = _feed(vd2, 600.0, 8.0, 8)  # its clock restarted at 600 s: nothing yet
    assert changes == []
    _, changes = _feed(vd2, t, 8.0, 1)
    assert len(changes) == 1 and changes[0] < 800


def test_bounds_floors_and_previous_difficulty_shares():
    cfg = VardiffConfig(target_interval_s=1.0, minimum=10.0, maximum=500.0, retarget_shares=5)
    vd = Vardiff(cfg, 100.0, now=0.0)
    _, changes = _feed(vd, 0.0, 0.01, 5)  # 10,000 difficulty/s wanted
    assert changes == [500.0]  # the pool's maximum
    vd = Vardiff(cfg, 100.0, now=0.0)
    _, changes = _feed(vd, 0.0, 100.0, 5)  # 1 difficulty/s wanted
    assert changes == [10.0]  # the pool's minimum
    # a share credited at another difficulty (a job sent before the change) never retargets
    vd = Vardiff(cfg, 100.0, now=0.0)
    assert all(vd.on_share(50.0, t / 100) is None for t in range(1, 20))
    # minimum-difficulty: a floor; suggest_difficulty (exact): go there, then a floor
    vd = Vardiff(cfg, 100.0, now=0.0)
    assert vd.set_floor(50.0, 0.0) is None and vd.difficulty == 100.0
    assert vd.set_floor(200.0, 0.0) == 200.0
    assert vd.set_floor(40.0, 0.0, exact=True) == 40.0 and vd.floor == 40.0
    assert vd.set_floor(1e6, 0.0, exact=True) == 500.0  # still within the pool's bounds
    _, changes = _feed(vd, 0.0, 100.0, 5)
    assert changes == []  # would go to the minimum, but the floor (clamped to 500) holds


# --- the pool, with real connections ----------------------------------------------------------

def _one_rig(make_fleet, pool: SimPool, shares_per_s_at_d: float):
    """A single connection mining at a fixed hashrate: like a proxy carrying many rigs."""
    return make_fleet(pool, 1, hashrate=D * 2**32 * shares_per_s_at_d, seed=5)


async def test_vardiff_raises_a_busy_aggregate_connection(pool_at_d, make_fleet):
    """40 shares/s at the start difficulty against a pool aiming at 10/s: it raises that
    connection's difficulty about 4x, the rig follows, and shares are then credited at it."""
    async with asyncio.timeout(10):
        pool = await pool_at_d("vd", vardiff=True, vardiff_target_interval_s=0.1,
                               vardiff_retarget_shares=40)
        fleet = await _one_rig(make_fleet, pool, 40.0)
        [stats] = await _open_stats(pool)
        await pool.wait_until(lambda: stats.retargets >= 1, 6, "a retarget")
        assert 2.5 * D <= stats.difficulty <= 7 * D, stats.difficulty / D
        assert stats.difficulty_sent[0][1] == D and stats.difficulty_sent[-1][1] == stats.difficulty
        new = stats.difficulty
        await fleet.wait_until(lambda: fleet.rigs[0].difficulty == new, 2, "rig follows")
        credited = stats.accepted
        await pool.wait_until(lambda: stats.accepted >= credited + 10, 5, "mining at it")
        await fleet.drain(5)
        assert not fleet.rejected and fleet.disconnects == 0
        later = [s for s in pool.shares if s.valid][-5:]
        assert {s.difficulty for s in later} <= {new, *(x for _, x in stats.difficulty_sent)}
        assert stats.credited == pytest.approx(sum(s.difficulty for s in pool.shares if s.valid))


async def test_vardiff_lowers_a_quiet_connection(pool_at_d, make_fleet):
    """One share a second against a pool aiming at ten: lowered after its retarget period
    (not on the first share: ckpool's back-from-absence rule), and never below the minimum."""
    async with asyncio.timeout(12):
        pool = await pool_at_d(difficulty=16 * D, vardiff=True, vardiff_target_interval_s=0.1,
                               vardiff_retarget_s=1.0, vardiff_min=D / 2)
        fleet = await _one_rig(make_fleet, pool, 16.0)  # 16/s at D is 1/s at 16 D
        [stats] = await _open_stats(pool)
        await pool.wait_until(lambda: stats.retargets >= 1, 8, "a retarget down")
        assert D / 2 <= stats.difficulty <= 4 * D, stats.difficulty / D
        assert stats.accepted >= 2  # the gate and the absence rule both waited for shares
        await fleet.drain(5)
        assert not fleet.rejected


async def _open_stats(pool: SimPool, count: int = 1):
    await pool.wait_until(lambda: sum(s.difficulty_sent != [] for s in pool.open_stats()) >= count,
                          5, f"{count} connections with work")
    return pool.open_stats()


def _grind(notify: list[Any], ext1: bytes, e2_size: int, meets: float, misses: float | None = None,
           start: int = 0) -> list[str]:
    """Submit params for a share that meets difficulty ``meets`` (and not ``misses``)."""
    n = messages.parse_notify(notify)
    e2 = start.to_bytes(e2_size, "big")
    root = work.merkle_root(work.dsha256(n.coinb1 + ext1 + e2 + n.coinb2), list(n.merkle_branch))
    head = work.build_header(n.version, work.prevhash_to_header(n.prevhash), root, n.ntime,
                             n.nbits, 0)[:76]
    low = work.difficulty_to_target(meets)
    high = -1 if misses is None else work.difficulty_to_target(misses)
    for nonce in range(1 << 20):
        value = work.hash_to_int(work.dsha256(head + nonce.to_bytes(4, "little")))
        if high < value <= low:
            return ["w", n.job_id, e2.hex(), f"{n.ntime:08x}", f"{nonce:08x}"]
    raise AssertionError("no share found")


async def test_credit_at_the_jobs_difficulty_with_grace_and_low_difficulty_rejects(pool_at_d):
    """After a difficulty change a job sent before it is credited at the lower of its own
    and the new difficulty (ckpool's grace, so firmware applying the change late is paid);
    a job sent after it needs the new one, and a share below that is rejected with 23."""
    async with asyncio.timeout(10):
        pool = await pool_at_d(vardiff=True, **LOOSE)
        client = await RawClient.connect("127.0.0.1", pool.port)
        sub = await client.call("mining.subscribe", ["raw"])
        ext1, e2_size = bytes.fromhex(sub["result"][1]), sub["result"][2]
        await client.call("mining.authorize", ["w", "x"])
        assert (await client.notification("mining.set_difficulty"))["params"] == [D]
        old_job = (await client.notification("mining.notify"))["params"]
        [stats] = pool.open_stats()

        # the client asks for 8x: set_difficulty at once, no new job (as ckpool)
        assert (await client.call("mining.suggest_difficulty", [8 * D]))["result"] is True
        assert (await client.notification("mining.set_difficulty"))["params"] == [8 * D]
        assert stats.difficulty == 8 * D and pool.jobs_sent == 1
        easy = _grind(old_job, ext1, e2_size, D, misses=8 * D)
        assert (await client.call("mining.submit", easy))["result"] is True
        assert pool.shares[-1].difficulty == D  # the job's difficulty: the grace

        pool.broadcast_job()
        new_job = (await client.notification("mining.notify"))["params"]
        low = _grind(new_job, ext1, e2_size, D, misses=8 * D, start=1)
        answer = await client.call("mining.submit", low)
        assert answer["error"][0] == 23 and pool.shares[-1].reason == "low_difficulty"
        hard = _grind(new_job, ext1, e2_size, 8 * D, start=2)
        assert (await client.call("mining.submit", hard))["result"] is True
        assert pool.shares[-1].difficulty == 8 * D

        # lowered to 2 D: a share for the job sent at 8 D needs only 2 D now
        assert (await client.call("mining.suggest_difficulty", [2 * D]))["result"] is True
        await client.notification("mining.set_difficulty")
        lowered = _grind(new_job, ext1, e2_size, 2 * D, misses=8 * D, start=3)
        assert (await client.call("mining.submit", lowered))["result"] is True
        assert pool.shares[-1].difficulty == 2 * D
        assert stats.accepted == 3 and stats.rejected == {23: 1}
        assert stats.credited == D + 8 * D + 2 * D
        assert stats.methods[:3] == ["mining.subscribe", "mining.authorize",
                                     "mining.suggest_difficulty"]
        assert stats.suggested_difficulty == 2 * D and stats.user_agent == "raw"
        client.close()


async def test_every_extranonce2_size_from_3_to_8_mines(pool_at_d, make_fleet):
    """NiceHash gives 3, most pools 4, ckpool 8: rigs mine valid shares on each."""
    async with asyncio.timeout(10):
        sized = [await pool_at_d(f"e2-{n}", extranonce2_size=n) for n in range(3, 9)]
        fleets = [await make_fleet(p, 2, share_interval=0.05) for p in sized]
        for pool, fleet in zip(sized, fleets):
            await pool.wait_until(lambda p=pool: p.accepted >= 4, 6, f"{pool.name} mining")
            await fleet.drain(5)
            assert not fleet.rejected
            assert {len(s.extranonce2) // 2 for s in pool.shares} == {pool.config.extranonce2_size}
    with pytest.raises(ValueError):
        SimPoolConfig(name="x", extranonce2_size=17)
    with pytest.raises(ValueError):
        SimPoolConfig(name="x", vardiff=True, vardiff_min=1.0, vardiff_max=0.5)
