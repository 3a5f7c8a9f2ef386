"""Issue 18 end to end: GPU rigs speaking EthereumStratum/1.0.0 through the proxy across a
primary reset, a silent primary and a failback; an ASIC and a GPU listener in one process,
each failing over on its own.  The sim pools check every nonce carries the extranonce they
gave that connection (their stand-in proof of work fails otherwise) and reject duplicates.
How fast the switch is gets measured and printed, not asserted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethrigs import EthRigFleet, EthSimRig
from tests.farm_fixture import stop_all

RIGS = 12
REFUSERS = 2  # rigs that never send mining.extranonce.subscribe


def _pool_entries(pools: dict[str, EthSimPool]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "url": f"stratum+tcp://127.0.0.1:{pool.port}",
            "user": "farm",
            "priority": i,
            "protocol": "ethstratum",
        }
        for i, (name, pool) in enumerate(pools.items())
    ]


@contextlib.asynccontextmanager
async def gpu_farm(**proxy: Any) -> AsyncIterator[tuple[dict[str, EthSimPool], ProxyService, EthRigFleet]]:
    """Two eth sim pools, the proxy with its main listener on ethstratum, a GPU fleet mining."""
    pools = {name: EthSimPool(name, job_interval=1.0) for name in ("primary", "backup")}
    svc = fleet = None
    try:
        for pool in pools.values():
            await pool.start()
        cfg = load_dict(
            {
                "proxy": {"listen": "127.0.0.1:0", "protocol": "ethstratum", **proxy},
                "api": {"enabled": False},
                "pools": _pool_entries(pools),
            }
        )
        svc = ProxyService(cfg)
        await svc.start()
        fleet = EthRigFleet("127.0.0.1", svc.port, RIGS, share_interval=0.05, refusers=REFUSERS)
        await fleet.start()
        await wait_until(
            lambda: fleet.on_pool(pools["primary"].header_prefix()) == RIGS,
            10,
            what="every GPU rig on the primary's job",
        )
        yield pools, svc, fleet
    finally:
        await stop_all([fleet] if fleet else [], [svc] if svc else [], pools.values())


def _switch_ms(rigs: list[EthSimRig], prefix: bytes, since: float) -> float:
    """When the last of ``rigs`` got its first job of the pool with ``prefix`` after ``since``."""
    return (
        max(min(t for t, header in r.job_arrivals if t >= since and header.startswith(prefix)) for r in rigs)
        - since
    )


def _gpu_switches(svc: ProxyService) -> list[dict[str, Any]]:
    return [e for e in svc.events.recent(kind="pool_switch") if e["from_pools"]]


def _check_pools(pools: dict[str, EthSimPool]) -> None:
    for pool in pools.values():
        assert pool.accepted > 0, pool.name
        assert pool.wrong_extranonce() == 0, (pool.name, dict(pool.rejected))
        assert pool.rejected["duplicate share"] == 0, pool.name


async def test_reset_and_failback_without_a_disconnect():
    async with gpu_farm(failback_hold_s=1.0) as (pools, svc, fleet):
        primary, backup = pools["primary"], pools["backup"]
        takers = [r for r in fleet.rigs if r.takes_set_extranonce]
        refusers = [r for r in fleet.rigs if not r.takes_set_extranonce]
        await wait_until(lambda: primary.accepted >= 100, 10, what="100 shares at the primary")
        t0 = time.monotonic()
        primary.reset_all()
        await wait_until(
            lambda: fleet.on_pool(backup.header_prefix()) == RIGS, 10, what="every rig on the backup's job"
        )
        switch_ms = _switch_ms(takers, backup.header_prefix(), t0) * 1000
        print(
            f"\nGPU switch after a primary reset: every set_extranonce rig on the backup's job "
            f"{switch_ms:.1f} ms after the reset ({len(takers)} rigs)"
        )
        accepted = backup.accepted
        await wait_until(lambda: backup.accepted >= accepted + 50, 10, what="50 shares at the backup")
        # the primary comes back (the proxy redials it): failback after the 1 s hold-down
        await wait_until(
            lambda: fleet.on_pool(primary.header_prefix()) == RIGS,
            15,
            what="every rig back on the primary's job",
        )
        accepted = primary.accepted
        await wait_until(lambda: primary.accepted >= accepted + 50, 10, what="50 more at the primary")
        await fleet.drain(10)

        assert fleet.total("disconnects") == 0
        assert fleet.pending == 0  # every submit answered
        assert all(r.reconnects == 0 and r.extranonce_changes == 2 and not r.unexpected for r in takers)
        assert all(r.reconnects == 2 and r.extranonce_changes == 0 for r in refusers)
        switches = _gpu_switches(svc)
        assert [(e["from_pools"], e["to_pools"]) for e in switches] == [
            (["primary"], ["backup"]),
            (["backup"], ["primary"]),
        ]
        for e in switches:
            assert e["extranonce_changes"] == {"set_extranonce": len(takers), "client.reconnect": REFUSERS}
        assert "connection closed by pool" in switches[0]["reason"]
        _check_pools(pools)
        view = svc.gpu["main"].view
        assert view is not None and view.active_pools() == ["primary"]
        p = view.pool("primary", svc.now())
        assert p["state"] == "healthy" and p["accepted"] > 0 and p["latency_ms"]["p50"] is not None
        # every share the proxy forwarded got its verdict or was answered lost with a reason
        for name in pools:
            p = view.pool(name, svc.now())
            assert p["forwarded"] == p["accepted"] + p["rejected_total"] + p["timeouts"] + p["lost_total"]
            assert p["accepted"] == pools[name].accepted


async def test_silent_primary_is_left_on_suspicion():
    async with gpu_farm(silent_ceiling_s=1.5, failback_hold_s=60.0) as (pools, svc, fleet):
        primary, backup = pools["primary"], pools["backup"]
        view = svc.gpu["main"].view
        assert view is not None
        await wait_until(
            lambda: view.pool("primary", svc.now())["latency_ms"]["window_count"] >= 40,
            10,
            what="40 answers from the primary",
        )
        t0 = time.monotonic()
        primary.stall()
        await wait_until(
            lambda: fleet.on_pool(backup.header_prefix()) == RIGS, 10, what="every rig on the backup's job"
        )
        takers = [r for r in fleet.rigs if r.takes_set_extranonce]
        silent_ms = _switch_ms(takers, backup.header_prefix(), t0) * 1000
        print(
            f"\nGPU switch after the primary went silent: {silent_ms:.0f}"
            f" ms (suspect bound {view.pool('primary', svc.now())['suspect_after_s']} s)"
        )
        await wait_until(
            lambda: view.pool("primary", svc.now())["state"] == "down",
            10,
            what="the primary down at the ceiling",
        )
        await fleet.drain(10)
        assert fleet.total("disconnects") == 0 and fleet.pending == 0
        health = [e["state"] for e in svc.events.recent(kind="pool_health") if e["pool"] == "primary"]
        assert health == ["healthy", "suspect", "down"]
        assert [(e["from_pools"], e["to_pools"]) for e in _gpu_switches(svc)] == [(["primary"], ["backup"])]
        p = view.pool("primary", svc.now())
        # the shares the silent pool never answered were answered to the rigs as timeouts
        assert p["forwarded"] == p["accepted"] + p["rejected_total"] + p["timeouts"] + p["lost_total"]
        _check_pools({"backup": backup})
        assert primary.wrong_extranonce() == 0


async def test_asic_and_gpu_listeners_fail_over_each_on_its_own(farm):
    asic_a = await farm.pool("asic-a")
    asic_b = await farm.pool("asic-b")
    gpu = {name: EthSimPool(name, job_interval=1.0) for name in ("gpu-a", "gpu-b")}
    fleet = None
    try:
        for pool in gpu.values():
            await pool.start()
        asic_pools = [
            {"name": n, "url": f"stratum+tcp://127.0.0.1:{p.port}", "user": "farm", "priority": i}
            for i, (n, p) in enumerate((("asic-a", asic_a), ("asic-b", asic_b)))
        ]
        cfg = load_dict(
            {
                "proxy": {"listen": "127.0.0.1:0", "failback_hold_s": 60.0},
                "api": {"enabled": False},
                "pools": asic_pools + _pool_entries(gpu),
                "listeners": [
                    {
                        "name": "gpu",
                        "listen": "127.0.0.1:0",
                        "protocol": "ethstratum",
                        "pools": ["gpu-a", "gpu-b"],
                    }
                ],
            }
        )
        farm.proxy = svc = ProxyService(cfg)
        await svc.start()
        assert set(svc.ports) == {"main", "gpu"} and svc.port == svc.ports["main"]
        asics = await farm.start_fleet(8, share_interval=0.2)
        fleet = EthRigFleet("127.0.0.1", svc.ports["gpu"], 8, share_interval=0.1)
        await fleet.start()
        await asics.wait_until(lambda: asics.rigs_with_job_containing(b"asic-a") == 8, 10, "ASICs on asic-a")
        await wait_until(lambda: fleet.on_pool(gpu["gpu-a"].header_prefix()) == 8, 10, what="GPUs on gpu-a")
        gpu_view = svc.gpu["gpu"].view
        assert svc.view is not None and gpu_view is not None
        assert svc.view.active_pools() == ["asic-a"] and gpu_view.active_pools() == ["gpu-a"]
        await wait_until(lambda: gpu["gpu-a"].accepted >= 20, 10, what="20 shares at gpu-a")

        gpu["gpu-a"].reset_all()  # the GPU primary fails: only the GPU listener moves
        await wait_until(lambda: fleet.on_pool(gpu["gpu-b"].header_prefix()) == 8, 10, what="GPUs on gpu-b")
        assert svc.view.active_pools() == ["asic-a"]
        assert asics.rigs_with_job_containing(b"asic-a") == 8
        await wait_until(lambda: gpu["gpu-b"].accepted >= 20, 10, what="20 shares at gpu-b")

        asic_a.reset_all()  # the ASIC primary fails: only the ASIC listener moves
        await asics.wait_until(lambda: asics.rigs_with_job_containing(b"asic-b") == 8, 10, "ASICs on asic-b")
        assert gpu_view.active_pools() == ["gpu-b"]
        assert fleet.on_pool(gpu["gpu-b"].header_prefix()) == 8

        await asics.drain(10)
        await fleet.drain(10)
        assert asics.disconnects == 0 and asics.pending == 0
        assert fleet.total("disconnects") == 0 and fleet.pending == 0
        switches = [(e["from_pools"], e["to_pools"]) for e in _gpu_switches(svc)]
        assert switches == [(["gpu-a"], ["gpu-b"]), (["asic-a"], ["asic-b"])]
        _check_pools(gpu)
    finally:
        await stop_all([fleet] if fleet else [], gpu.values())


async def test_a_reload_reorders_the_gpu_pools_without_a_disconnect(tmp_path):
    pools = {name: EthSimPool(name, job_interval=1.0) for name in ("primary", "backup")}
    svc = fleet = None

    def write(primary_priority: int) -> str:
        lines = ['[proxy]\nlisten = "127.0.0.1:0"\nprotocol = "ethstratum"\n\n[api]\nenabled = false\n']
        for name, pool in pools.items():
            priority = primary_priority if name == "primary" else 1
            lines.append(
                f'[[pools]]\nname = "{name}"\nurl = "stratum+tcp://127.0.0.1:{pool.port}"\n'
                f'user = "farm"\npriority = {priority}\n'
            )
        path = tmp_path / "gpu.toml"
        path.write_text("\n".join(lines))
        return str(path)

    try:
        for pool in pools.values():
            await pool.start()
        from proxy.config import load

        svc = ProxyService(load(write(0)))
        await svc.start()
        fleet = EthRigFleet("127.0.0.1", svc.port, 4, share_interval=0.05)
        await fleet.start()
        await wait_until(
            lambda: fleet.on_pool(pools["primary"].header_prefix()) == 4, 10, what="on the primary"
        )
        result = svc.reload(write(2))  # the backup is now preferred
        assert result["updated"] == ["primary"] and result["added"] == result["removed"] == []
        await wait_until(
            lambda: fleet.on_pool(pools["backup"].header_prefix()) == 4, 10, what="on the backup"
        )
        await fleet.drain(10)
        assert fleet.total("disconnects") == 0 and fleet.pending == 0
        assert any(e["updated"] == ["primary"] for e in svc.events.recent(kind="config_reloaded"))
    finally:
        await stop_all([fleet] if fleet else [], [svc] if svc else [], pools.values())
