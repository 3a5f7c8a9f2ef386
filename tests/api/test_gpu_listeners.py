"""The API and /metrics for GPU listeners: their pools are listed, read, drained and changed
through the same pool routes as SV1 pools; /api/v1/listeners lists both ports; /metrics
parses and carries the GPU pools and the per-listener switch counters."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.ethpool import EthSimPool
from proxy.sim.ethrigs import EthRigFleet
from proxy.sim.pool import SimPool, SimPoolConfig
from tests.farm_fixture import stop_all

TOKEN = "secret"


async def test_gpu_pools_through_the_api_and_metrics():
    asic = SimPool(SimPoolConfig(name="asic-a", difficulty=2.0**-24, job_interval=30.0))
    gpu = {n: EthSimPool(n, job_interval=1.0) for n in ("gpu-a", "gpu-b")}
    svc = fleet = None
    try:
        await asic.start()
        for pool in gpu.values():
            await pool.start()
        pools = [{"name": "asic-a", "url": f"stratum+tcp://127.0.0.1:{asic.port}", "user": "farm"}] + [
            {
                "name": n,
                "url": f"stratum+tcp://127.0.0.1:{p.port}",
                "user": "farm",
                "priority": i,
                "protocol": "ethstratum",
            }
            for i, (n, p) in enumerate(gpu.items())
        ]
        cfg = load_dict(
            {
                "proxy": {"listen": "127.0.0.1:0"},
                "api": {"listen": "127.0.0.1:0", "token": TOKEN},
                "pools": pools,
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
        svc = ProxyService(cfg, with_api=True)
        await svc.start()
        fleet = EthRigFleet("127.0.0.1", svc.ports["gpu"], 4, share_interval=0.05)
        await fleet.start()
        await wait_until(lambda: fleet.on_pool(gpu["gpu-a"].header_prefix()) == 4, 10, what="GPUs on gpu-a")
        await wait_until(lambda: gpu["gpu-a"].accepted >= 20, 10, what="20 shares at gpu-a")
        base = f"http://127.0.0.1:{svc.api_port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/v1/listeners") as r:
                listeners = {x["name"]: x for x in (await r.json())["listeners"]}
            assert listeners["main"]["protocol"] == "sv1" and listeners["main"]["pools"] == ["asic-a"]
            assert listeners["gpu"]["protocol"] == "EthereumStratum/1.0.0"
            assert listeners["gpu"]["port"] == svc.ports["gpu"] and listeners["gpu"]["rigs"] == 4
            assert listeners["gpu"]["active_pools"] == ["gpu-a"]
            async with http.get(f"{base}/api/v1/pools") as r:
                names = [p["name"] for p in (await r.json())["pools"]]
            assert names == ["asic-a", "gpu-a", "gpu-b"]
            async with http.get(f"{base}/api/v1/pools/gpu-a") as r:
                view = await r.json()
            assert view["state"] == "healthy" and view["accepted"] > 0 and view["listener"] == "gpu"
            async with http.post(f"{base}/api/v1/pools/gpu-a/drain", headers=auth) as r:
                assert r.status == 200
            await wait_until(lambda: fleet.on_pool(gpu["gpu-b"].header_prefix()) == 4, 10, what="drained")
            async with http.patch(f"{base}/api/v1/pools/gpu-b", json={"weight": "x"}, headers=auth) as r:
                assert r.status == 400 and "weight" in (await r.json())["error"]
            async with http.patch(f"{base}/api/v1/pools/gpu-b", json={"priority": 5}, headers=auth) as r:
                assert r.status == 200 and (await r.json())["priority"] == 5
            async with http.get(f"{base}/api/v1/listeners/gpu/rigs") as r:
                rigs = (await r.json())["rigs"]
            assert len(rigs) == 4 and {x["pool"] for x in rigs} == {"gpu-b"}
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        up = {s.labels["pool"]: s.value for s in families["stratum_proxy_pool_up"].samples}
        assert up == {"asic-a": 1.0, "gpu-a": 1.0, "gpu-b": 1.0}
        shares = {
            (s.labels["pool"], s.labels["result"]): s.value for s in families["stratum_proxy_shares"].samples
        }
        assert shares[("gpu-a", "accepted")] > 0
        events = {s.labels["counter"]: s.value for s in families["stratum_proxy_listener_events"].samples}
        assert events["set_extranonce"] == 4 and events["client_reconnect"] == 0
        await fleet.drain(10)
        assert fleet.total("disconnects") == 0 and fleet.pending == 0
    finally:
        await stop_all([fleet] if fleet else [], [svc] if svc else [], [asic, *gpu.values()])
