"""GPU pools' weighted split through real sockets: 2 GPU rigs cannot make 70/30 by count, so
the proxy time-slices a rig between the pools with mining.set_extranonce + a clean job; the
sim pools check every share carries the extranonce they gave that connection."""

from __future__ import annotations

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethrigs import EthRigFleet
from tests.farm_fixture import stop_all


async def test_two_gpu_rigs_make_70_30_by_time_slicing():
    pools = {name: EthSimPool(name, job_interval=1.0) for name in ("a", "b")}
    svc = fleet = None
    try:
        for pool in pools.values():
            await pool.start()
        cfg = load_dict({
            "proxy": {"listen": "127.0.0.1:0", "protocol": "ethstratum", "split_slice_s": 0.5},
            "api": {"enabled": False},
            "pools": [{"name": n, "url": f"stratum+tcp://127.0.0.1:{p.port}", "user": "farm",
                       "priority": 0, "weight": w} for (n, p), w in zip(pools.items(), (70.0, 30.0))],
        })
        svc = ProxyService(cfg)
        await svc.start()
        fleet = EthRigFleet("127.0.0.1", svc.port, 2, share_interval=0.02)
        await fleet.start()
        core = svc.gpu["main"].core
        assert core is not None

        def share_a() -> float:
            a, b = core.pools["a"].split_work, core.pools["b"].split_work
            return a / (a + b) if a + b else 0.0

        await wait_until(lambda: core.totals["split_moves"] >= 3 and core.totals["accepted"] >= 300
                         and abs(share_a() - 0.70) <= 0.03, 20, what="70/30 delivered by time-slicing")
        await fleet.drain(10)
        assert fleet.total("disconnects") == 0 and fleet.total("reconnects") == 0 and fleet.pending == 0
        assert fleet.total("extranonce_changes") == core.totals["set_extranonce"] >= 3
        assert sum(p.wrong_extranonce() for p in pools.values()) == 0
        assert all(p.accepted > 0 for p in pools.values())
        # the only refusals: a share racing its pool's next clean job (one a second here)
        reasons = {reason for r in fleet.rigs for reason in r.rejected}
        assert reasons <= {"stale: job no longer current"}, reasons
    finally:
        await stop_all([fleet] if fleet else [], [svc] if svc else [], pools.values())
