"""Pool settings in etcd: a write through any instance is in force on every instance within
1 s, an instance stopped during the change has it when it starts, and any instance serves the
farm-wide view; the instances sit behind the shipped HAProxy config (send-proxy-v2), so the
farm's rigs table shows each rig's own loopback address."""

from __future__ import annotations

import uuid

import aiohttp

from proxy.farm.config import load_farm_dict
from proxy.farm.service import FarmService
from proxy.sim import wait_until

from .conftest import TOKEN

RIGS = 30
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cluster_section(etcd, farm: str) -> dict:
    return {"cluster": {"etcd": etcd.endpoints, "farm": farm, "lease_ttl_s": 2, "publish_s": 0.3,
                        "timeout_s": 1.0}}


async def test_a_change_through_any_instance_reaches_every_instance(cluster, etcd):
    farm = f"settings-{uuid.uuid4().hex[:6]}"
    extra = cluster_section(etcd, farm)
    await cluster.pool("primary")
    await cluster.pool("backup")
    behind = {"proxy_protocol": "v2", "trusted_proxies": ["127.0.0.1/32"]}
    one = await cluster.instance("proxy-1", extra=extra, **behind)
    two = await cluster.instance("proxy-2", prefix_start=0x8000, extra=extra, **behind)
    port = await cluster.start_haproxy()
    # proxy-3 is registered, then stopped while the farm changes (it has no rigs)
    three = await cluster.instance("proxy-3", prefix_start=0x4000, extra=extra)
    sources = [f"127.0.0.{i}" for i in range(2, 5)]
    fleet = await cluster.start_fleet(RIGS, port=port, share_interval=0.3, source_addresses=sources)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 15,
                           "every rig on the primary's job")
    await wait_until(lambda: all(len(s.cluster.members) == 3 for s in (one, two, three))
                     and sum(m["status"]["rigs_connected"] for m in one.cluster.members.values()) == RIGS,
                     5, what="three members registered, their summaries counting every rig")
    base = {name: f"http://127.0.0.1:{svc.api_port}" for name, svc in (("one", one), ("two", two))}

    async with aiohttp.ClientSession() as http:
        # the farm-wide view from any instance: every rig under its own address, not HAProxy's
        async with http.get(f"{base['two']}/api/v1/farm/rigs", params={"limit": 100}) as resp:
            rigs = await resp.json()
        assert resp.status == 200 and rigs["total"] == RIGS
        assert {r["remote"] for r in rigs["rigs"]} == {r.local_address for r in fleet.rigs}
        assert {r["instance"] for r in rigs["rigs"]} == {"proxy-1", "proxy-2"}
        async with http.get(f"{base['one']}/api/v1/farm/status") as resp:
            status = await resp.json()
        assert status["instances_total"] == 3 and status["rigs_connected"] == RIGS
        assert status["leader"] in ("proxy-1", "proxy-2", "proxy-3")

        await three.stop()
        del cluster.instances["proxy-3"]
        # a clean stop revokes its lease: its registration goes at once, not after the TTL
        await wait_until(lambda: "proxy-3" not in one.cluster.members, 1.5, what="proxy-3 deregistered")
        # the backup becomes preferred, through proxy-1's API: one etcd transaction
        async with http.patch(f"{base['one']}/api/v1/pools/backup", json={"priority": -1},
                              headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
        running = (one, two)
        await wait_until(lambda: all(s.view.pool("backup", s.now())["priority"] == -1
                                     and s.view.active_pools() == ["backup"] for s in running), 1.0,
                         what="the change in force on every running instance within 1 s")
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 10,
                               "every rig on the backup's job")

        # proxy-3 comes back: it reads the farm's settings before its start returns
        three = await cluster.instance("proxy-3", prefix_start=0x4000, extra=extra)
        assert three.view.pool("backup", three.now())["priority"] == -1
        assert three.view.active_pools() == ["backup"]

        # drain through proxy-2: every instance drains, the rigs go back to the primary
        async with http.post(f"{base['two']}/api/v1/pools/backup/drain", headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
        everyone = (one, two, three)
        await wait_until(lambda: all(s.view.pool("backup", s.now())["draining"] for s in everyone), 1.0,
                         what="drained on every instance within 1 s")
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 10,
                               "every rig back on the primary")
        # every instance's own events, merged, from any instance (its member list is at most
        # one beat old: wait until it has the restarted proxy-3's new API address)
        await wait_until(lambda: two.cluster.members.get("proxy-3", {}).get("api")
                         == f"http://127.0.0.1:{three.api_port}", 2, what="proxy-3 re-registered")
        async with http.get(f"{base['two']}/api/v1/farm/events", params={"kind": "pool_drain"}) as resp:
            drained = (await resp.json())["events"]
        assert sorted(e["instance"] for e in drained) == ["proxy-1", "proxy-2", "proxy-3"]
        assert all(e["pool"] == "backup" for e in drained)
        async with http.get(f"{base['one']}/api/v1/cluster") as resp:
            view = await resp.json()
        assert view["settings"]["backup"] == {"priority": -1, "drained": True}
        # a bad write is refused naming the field, and changes nothing
        async with http.patch(f"{base['two']}/api/v1/pools/backup", json={"weight": -2},
                              headers=AUTH) as resp:
            assert resp.status == 400 and "weight" in (await resp.json())["error"]
        assert one.view.pool("backup", one.now())["weight"] == 1.0
        # a value written around the API (etcdctl, a script) that is not valid settings is
        # refused by every instance with an event, and the settings in force stay
        await one.cluster.etcd.put(f"/{farm}/pools/backup", '{"priority": "high", "drained": true}')
        await wait_until(lambda: all(s.events.recent(kind="cluster_setting_refused") for s in everyone), 2,
                         what="the bad value refused everywhere")
        refused = one.events.recent(kind="cluster_setting_refused")
        assert len(refused) == 1 and "priority: must be an integer" in refused[0]["reason"]
        assert all(s.view.pool("backup", s.now())["priority"] == -1 for s in everyone)
        async with http.patch(f"{base['one']}/api/v1/pools/backup", json={"priority": -1},
                              headers=AUTH) as resp:  # the API writes valid settings over it
            assert resp.status == 200, await resp.text()

        # `stratum-proxy farm` with [cluster]: a stateless reader of the same etcd
        farm_cfg = load_farm_dict({"farm": {"listen": "127.0.0.1:0", "token": "farm-token", "poll_s": 0.2},
                                   "cluster": extra["cluster"]})
        reader = FarmService(farm_cfg)
        await reader.start()
        try:
            await reader.wait_polled(2, 10)
            status = reader.status()
            assert status["instances_up"] == 3 and status["rigs_connected"] == RIGS
            assert status["cluster"]["etcd_ok"] and status["cluster"]["leader"] == one.cluster.leader
            async with http.post(f"http://127.0.0.1:{reader.api_port}/api/v1/pools/backup/undrain",
                                 headers={"Authorization": "Bearer farm-token"}) as resp:
                assert resp.status == 200, await resp.text()
            await wait_until(lambda: not any(s.view.pool("backup", s.now())["draining"] for s in everyone),
                             1.0, what="undrained on every instance within 1 s, written by the farm reader")
            assert not reader.pending  # no retry queue: etcd is the queue
        finally:
            await reader.stop()

    await fleet.drain(10)
    assert fleet.disconnects == 0 and fleet.pending == 0 and fleet.lost == 0
