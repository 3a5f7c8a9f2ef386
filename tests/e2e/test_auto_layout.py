"""Issue 14, done when: default settings, pools of extranonce2_size 8 and 4 (either one
primary), rigs without mining.extranonce.subscribe connecting before and after the pools
are up; failover and failback with 0 client.reconnect, 0 set_extranonce, 0 disconnects and
0 unanswered.  (How fast: the benchmark.)"""

from __future__ import annotations

import socket

import pytest

from proxy.sim import wait_until
from proxy.sim.pool import SimPool, SimPoolConfig

RIGS = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _all_mining_on(pool: SimPool, fleets) -> None:
    """Every rig of every fleet on ``pool``'s job, and 20 more shares accepted there."""
    tag = pool.config.name.encode()
    for fleet in fleets:
        await fleet.wait_until(lambda f=fleet: f.rigs_with_job_containing(tag) == len(f.rigs), 20,
                               f"rigs on {pool.config.name}'s job")
    accepted = pool.accepted
    await wait_until(lambda: pool.accepted >= accepted + 20, 15, what=f"mining on {pool.config.name}")


@pytest.mark.parametrize("primary_e2,backup_e2", [(8, 4), (4, 8)])
async def test_pools_of_8_and_4_with_default_settings(farm, primary_e2, backup_e2):
    for name, e2 in (("primary", primary_e2), ("backup", backup_e2)):
        farm.pools[name] = SimPool(SimPoolConfig(name=name, port=_free_port(), extranonce2_size=e2,
                                                 difficulty=2**-24, job_interval=30.0))
    svc = await farm.start_proxy(failback_hold_s=2.0)  # default layout: "auto"
    early = await farm.start_fleet(RIGS // 2, share_interval=0.3)  # before any pool is up
    assert early.subscribed == 0  # their subscribe answers wait for the pools' sizes
    for pool in farm.pools.values():
        await pool.start()
    late = await farm.start_fleet(RIGS // 2, share_interval=0.3, seed=7)
    fleets = (early, late)
    for fleet in fleets:
        await fleet.wait_until(lambda f=fleet: f.rigs_with_job_containing(b"primary") == len(f.rigs), 10,
                               "rigs on the primary's job")
    layout = svc.view.status(svc.now())["layout"]
    assert (layout["prefix_size"], layout["extranonce2_size"]) == (1, 3), layout
    primary, backup = farm.pools["primary"], farm.pools["backup"]
    primary.reset_all()
    await primary.refuse()
    await _all_mining_on(backup, fleets)
    await primary.resume()
    await _all_mining_on(primary, fleets)
    for fleet in fleets:
        await fleet.drain(10)
        assert fleet.disconnects == 0 and fleet.pending == 0
        assert set(fleet.rejected) <= {21}  # a share racing a clean job may be stale
        for rig in fleet.rigs:
            assert rig.reconnect_requests == 0 and rig.set_extranonce_received == 0
    for pool in (primary, backup):
        assert [s for s in pool.shares if not s.valid] == []
    assert svc.view.totals()["rigs_disconnected"] == 0
    assert not svc.view.pool("primary", svc.now())["narrow"]
    assert not svc.view.pool("backup", svc.now())["narrow"]
