"""The getwork dialect (eth_submitLogin / eth_getWork / eth_submitWork) end to end: getwork
rigs on a listener of ``protocol = "ethproxy"`` through a primary reset and a failback, and
beside an EthereumStratum listener in one process.  The sim pools check every share's mix
digest against its nonce and their own recent work, so a share sent to the wrong pool or
changed on the way is caught."""

from __future__ import annotations

import time

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethproxysim import EthProxyRigFleet, EthProxySimPool
from proxy.sim.ethrigs import EthRigFleet
from tests.farm_fixture import stop_all


def _entry(name: str, pool: EthSimPool, priority: int, protocol: str) -> dict:
    return {
        "name": name,
        "url": f"stratum+tcp://127.0.0.1:{pool.port}",
        "user": "0xacct",
        "priority": priority,
        "protocol": protocol,
    }


async def _start_pools(getwork: dict, stratum: dict) -> list[dict]:
    """Start a primary and a backup of each dialect; their [[pools]] entries."""
    for pool in (*getwork.values(), *stratum.values()):
        await pool.start()
    pools = [_entry(n, p, i, "ethproxy") for i, (n, p) in enumerate(getwork.items())]
    return pools + [_entry(n, p, i, "ethstratum") for i, (n, p) in enumerate(stratum.items())]


async def test_getwork_rigs_fail_over_and_back_beside_an_ethereumstratum_listener():
    getwork = {n: EthProxySimPool(n, job_interval=1.0) for n in ("gw-primary", "gw-backup")}
    stratum = {n: EthSimPool(n, job_interval=1.0) for n in ("es-primary", "es-backup")}
    svc = gw_fleet = es_fleet = None
    try:
        pools = await _start_pools(getwork, stratum)
        cfg = load_dict(
            {
                "proxy": {"listen": "127.0.0.1:0", "protocol": "ethproxy", "failback_hold_s": 1.0},
                "api": {"enabled": False},
                "pools": pools,
                "listeners": [
                    {
                        "name": "nicehash",
                        "listen": "127.0.0.1:0",
                        "protocol": "ethstratum",
                        "pools": list(stratum),
                    }
                ],
            }
        )
        svc = ProxyService(cfg)
        await svc.start()
        gw_fleet = EthProxyRigFleet("127.0.0.1", svc.ports["main"], 8, share_interval=0.05)
        es_fleet = EthRigFleet("127.0.0.1", svc.ports["nicehash"], 4, share_interval=0.05)
        await gw_fleet.start()
        await es_fleet.start()
        primary, backup = getwork["gw-primary"], getwork["gw-backup"]
        await wait_until(lambda: gw_fleet.on_pool(primary.header_prefix()) == 8, 10, what="on the primary")
        await wait_until(lambda: primary.accepted >= 50, 10, what="50 shares at the primary")
        t0 = time.monotonic()
        primary.reset_all()
        await wait_until(lambda: gw_fleet.on_pool(backup.header_prefix()) == 8, 10, what="on the backup")
        arrivals = [
            min(t for t, h in r.job_arrivals if t >= t0 and h.startswith(backup.header_prefix()))
            for r in gw_fleet.rigs
        ]
        print(
            f"\ngetwork switch after a primary reset: every rig on the backup's work "
            f"{(max(arrivals) - t0) * 1000:.1f} ms after the reset"
        )
        accepted = backup.accepted
        await wait_until(lambda: backup.accepted >= accepted + 30, 10, what="30 shares at the backup")
        await wait_until(
            lambda: gw_fleet.on_pool(primary.header_prefix()) == 8, 15, what="back on the primary"
        )
        accepted = primary.accepted
        await wait_until(lambda: primary.accepted >= accepted + 30, 10, what="30 more at the primary")
        # the EthereumStratum listener did not move
        assert es_fleet.on_pool(stratum["es-primary"].header_prefix()) == 4
        await gw_fleet.drain(10)
        await es_fleet.drain(10)
        assert gw_fleet.total("disconnects") == 0 and gw_fleet.pending == 0
        assert gw_fleet.total("reconnects") == 0 and not any(r.unexpected for r in gw_fleet.rigs)
        assert es_fleet.total("disconnects") == 0 and es_fleet.pending == 0
        for pool in (primary, backup, stratum["es-primary"]):
            assert pool.accepted > 0 and pool.wrong_extranonce() == 0, pool.name
            assert pool.rejected["duplicate share"] == 0, pool.name
        switches = [
            (e["from_pools"], e["to_pools"]) for e in svc.events.recent(kind="pool_switch") if e["from_pools"]
        ]
        assert switches == [(["gw-primary"], ["gw-backup"]), (["gw-backup"], ["gw-primary"])]
        view = svc.gpu["main"].view
        assert view is not None and view.pool("gw-primary", svc.now())["protocol"] == "ethproxy"
    finally:
        await stop_all(
            [f for f in (gw_fleet, es_fleet) if f],
            [svc] if svc else [],
            [*getwork.values(), *stratum.values()],
        )


async def test_one_port_serves_both_dialects_each_failing_over_among_its_own_pools():
    getwork = {n: EthProxySimPool(n, job_interval=1.0) for n in ("gw-primary", "gw-backup")}
    stratum = {n: EthSimPool(n, job_interval=1.0) for n in ("es-primary", "es-backup")}
    svc = gw_fleet = es_fleet = None
    try:
        pools = await _start_pools(getwork, stratum)
        cfg = load_dict(
            {
                "proxy": {"listen": "127.0.0.1:0", "failback_hold_s": 60.0},
                "api": {"enabled": False},
                "pools": [{"name": "asic", "url": "stratum+tcp://127.0.0.1:9", "user": "farm"}, *pools],
                "listeners": [
                    {"name": "gpu", "listen": "127.0.0.1:0", "protocol": "eth", "pools": [*getwork, *stratum]}
                ],
            }
        )
        svc = ProxyService(cfg)
        await svc.start()
        assert sorted(svc.gpu) == ["gpu", "gpu.getwork"]
        port = svc.ports["gpu"]  # one port, both dialects
        gw_fleet = EthProxyRigFleet("127.0.0.1", port, 6, share_interval=0.05)
        es_fleet = EthRigFleet("127.0.0.1", port, 6, share_interval=0.05)
        await gw_fleet.start()
        await es_fleet.start()
        await wait_until(
            lambda: gw_fleet.on_pool(getwork["gw-primary"].header_prefix()) == 6, 10, what="getwork"
        )
        await wait_until(
            lambda: es_fleet.on_pool(stratum["es-primary"].header_prefix()) == 6, 10, what="stratum"
        )
        await wait_until(
            lambda: getwork["gw-primary"].accepted >= 20 and stratum["es-primary"].accepted >= 20,
            10,
            what="shares at both primaries",
        )
        stratum["es-primary"].reset_all()  # only the EthereumStratum rigs move
        await wait_until(
            lambda: es_fleet.on_pool(stratum["es-backup"].header_prefix()) == 6, 10, what="es moved"
        )
        assert gw_fleet.on_pool(getwork["gw-primary"].header_prefix()) == 6
        getwork["gw-primary"].reset_all()  # now the getwork rigs move
        await wait_until(
            lambda: gw_fleet.on_pool(getwork["gw-backup"].header_prefix()) == 6, 10, what="gw moved"
        )
        assert es_fleet.on_pool(stratum["es-backup"].header_prefix()) == 6
        await wait_until(
            lambda: getwork["gw-backup"].accepted >= 20 and stratum["es-backup"].accepted >= 20,
            10,
            what="shares at both backups",
        )
        await gw_fleet.drain(10)
        await es_fleet.drain(10)
        for fleet in (gw_fleet, es_fleet):
            assert fleet.total("disconnects") == 0 and fleet.pending == 0 and fleet.total("reconnects") == 0
        for pool in (*getwork.values(), *stratum.values()):
            assert pool.accepted > 0 and pool.wrong_extranonce() == 0, pool.name
        views = {name: g.view for name, g in svc.gpu.items()}
        assert views["gpu"].rig_count() == 6 and views["gpu.getwork"].rig_count() == 6  # type: ignore[union-attr]
    finally:
        await stop_all(
            [f for f in (gw_fleet, es_fleet) if f],
            [svc] if svc else [],
            [*getwork.values(), *stratum.values()],
        )
