"""GPU ports (EthereumStratum/1.0.0) shared by several instances: with ``reuse_port`` (one
port, the kernel spreads the rigs) and behind the shipped HAProxy config (send-proxy-v2)."""

from __future__ import annotations

from typing import Any

from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethrigs import EthRigFleet
from tests.farm.conftest import socket_port

RIGS = 16


async def _gpu_pools(cluster) -> tuple[dict[str, EthSimPool], list[dict[str, Any]]]:
    pools = {name: EthSimPool(name, job_interval=1.0) for name in ("etc-a", "etc-b")}
    for pool in pools.values():
        await pool.start()
    cluster.pools.update(pools)  # stopped with the cluster
    entries = [{"name": name, "url": f"stratum+tcp://127.0.0.1:{pool.port}", "user": "farm",
                "priority": i, "protocol": "ethstratum"} for i, (name, pool) in enumerate(pools.items())]
    return pools, entries


async def _fleet(cluster, port: int) -> EthRigFleet:
    fleet = EthRigFleet("127.0.0.1", port, RIGS, share_interval=0.1)
    cluster.fleets.append(fleet)
    await fleet.start()
    return fleet


async def test_two_instances_share_a_gpu_port_with_reuse_port(cluster):
    pools, entries = await _gpu_pools(cluster)
    with socket_port() as port:
        pass
    gpu = {"listen": f"127.0.0.1:{port}", "protocol": "ethstratum", "reuse_port": True}
    one = await cluster.instance("gpu-1", extra={"pools": entries}, **gpu)
    two = await cluster.instance("gpu-2", extra={"pools": entries}, **gpu)
    assert one.ports["main"] == two.ports["main"] == port
    fleet = await _fleet(cluster, port)
    prefix = pools["etc-a"].header_prefix()
    await fleet.wait_until(lambda: fleet.on_pool(prefix) == RIGS, 10, "every GPU rig on etc-a")
    spread = (one.gpu["main"].view.rig_count(), two.gpu["main"].view.rig_count())
    assert sum(spread) == RIGS and min(spread) > 0, spread  # the kernel spread them (P(all on one) = 2^-15)

    # one instance stops: its rigs reconnect to the same port and land on the other
    await one.stop()
    await wait_until(lambda: two.gpu["main"].view.rig_count() == RIGS, 10, what="every GPU rig on gpu-2")
    await fleet.wait_until(lambda: fleet.on_pool(prefix) == RIGS, 10, "every GPU rig mining again")
    assert fleet.total("disconnects") == spread[0]
    assert pools["etc-a"].wrong_extranonce() == 0


async def test_gpu_instances_behind_the_shipped_haproxy_config(cluster):
    pools, entries = await _gpu_pools(cluster)
    # as configs/instance-*.toml, the rig port speaking EthereumStratum/1.0.0
    behind = {"protocol": "ethstratum", "proxy_protocol": "v2", "trusted_proxies": ["127.0.0.1/32"]}
    one = await cluster.instance("gpu-1", extra={"pools": entries}, **behind)
    two = await cluster.instance("gpu-2", extra={"pools": entries}, **behind)
    fleet = await _fleet(cluster, await cluster.start_haproxy())
    await fleet.wait_until(lambda: fleet.on_pool(pools["etc-a"].header_prefix()) == RIGS, 15,
                           "every GPU rig on etc-a")
    views = (one.gpu["main"].view, two.gpu["main"].view)
    spread = tuple(v.rig_count() for v in views)
    assert sum(spread) == RIGS and min(spread) >= RIGS // 4, spread  # leastconn
    # each rig appears under its own address (PROXY v2), not HAProxy's
    assert {r["peer"] for v in views for r in v.rigs()} == {r.local_address for r in fleet.rigs}

    # the GPU primary resets: both instances move their rigs with set_extranonce, none reconnects
    pools["etc-a"].reset_all()
    await pools["etc-a"].stop()
    await fleet.wait_until(lambda: fleet.on_pool(pools["etc-b"].header_prefix()) == RIGS, 10,
                           "every GPU rig on etc-b")
    assert fleet.total("disconnects") == 0
    assert [v.active_pools() for v in views] == [["etc-b"], ["etc-b"]]
    assert sum(v.totals()["set_extranonce"] for v in views) == RIGS

    # gpu-1 dies: its rigs come back through HAProxy on gpu-2
    await one.stop()
    await wait_until(lambda: views[1].rig_count() == RIGS, 20, what="every GPU rig on gpu-2")
    await fleet.wait_until(lambda: fleet.on_pool(pools["etc-b"].header_prefix()) == RIGS, 10,
                           "every GPU rig mining on etc-b")
    await fleet.drain(10)
    assert fleet.pending == 0 and pools["etc-b"].wrong_extranonce() == 0
