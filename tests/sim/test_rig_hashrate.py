"""Sim rigs with a fixed hashrate find shares at the pace a real rig would at each difficulty."""

from __future__ import annotations

import time

from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet

DIFF = 2**-24
HASHRATE = DIFF * 2**32 / 0.05  # a share every 50 ms at DIFF


async def _seconds_for(difficulty: float, shares: int) -> float:
    pool = SimPool(SimPoolConfig(name=f"d{difficulty}", difficulty=difficulty, job_interval=30.0))
    await pool.start()
    fleet = RigFleet("127.0.0.1", pool.port, 5, share_interval=99.0, hashrate=HASHRATE, seed=3)
    try:
        await fleet.start()
        await fleet.wait_until(lambda: fleet.authorized == 5 and all(r.job for r in fleet.rigs), 10, "ready")
        t0, base = time.monotonic(), fleet.submitted
        await fleet.wait_until(lambda: fleet.submitted - base >= shares, 20, f"{shares} shares")
        return time.monotonic() - t0
    finally:
        await fleet.stop()
        await pool.stop()


async def test_twice_the_difficulty_half_the_shares():
    # share_interval (99 s) is ignored: the pace comes from the hashrate and the difficulty
    easy = await _seconds_for(DIFF, 60)  # 5 rigs x 20 shares/s: ~0.6 s
    hard = await _seconds_for(DIFF * 2, 60)  # 10 shares/s each: ~1.2 s
    assert 1.4 < hard / easy < 3.0, (easy, hard)
