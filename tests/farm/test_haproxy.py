"""Two instances behind the shipped HAProxy config, 200 rigs, the farm control plane watching."""

from __future__ import annotations

RIGS = 200


async def test_pool_reset_and_instance_death_behind_haproxy(cluster):
    primary = await cluster.pool("primary")
    await cluster.pool("backup")
    # as configs/instance-*.toml: HAProxy's send-proxy-v2 gives each rig's real address
    behind = {"proxy_protocol": "v2", "trusted_proxies": ["127.0.0.1/32"]}
    one = await cluster.instance("proxy-1", **behind)
    # disjoint prefixes make the rigs' extranonce spaces distinct across instances too
    two = await cluster.instance("proxy-2", prefix_start=0x8000, **behind)
    port = await cluster.start_haproxy()
    farm = await cluster.start_farm()
    sources = [f"127.0.0.{i}" for i in range(2, 6)]  # rigs from four loopback addresses
    fleet = await cluster.start_fleet(RIGS, port=port, share_interval=0.3, source_addresses=sources)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 15,
                           "every rig on the primary's job")
    # each rig appears under its own address and port, not HAProxy's
    remotes = {r["remote"] for svc in (one, two) for r in svc.view.rigs(svc.now(), 0, RIGS)[1]}
    assert remotes == {r.local_address for r in fleet.rigs}
    assert {a.rsplit(":", 1)[0] for a in remotes} == set(sources)
    # leastconn spreads the rigs: both instances carry a real share of them
    spread = (one.view.rig_count(), two.view.rig_count())
    assert sum(spread) == RIGS
    assert min(spread) >= RIGS // 4, spread
    await farm.wait_polled(2, 10)
    status = farm.status()
    assert status["instances_up"] == 2 and status["rigs_connected"] == RIGS

    # the primary pool resets and refuses: every rig on both instances moves, none reconnects
    primary.reset_all()
    await primary.refuse()
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 10,
                           "every rig on the backup's job")
    accepted = fleet.accepted
    await fleet.wait_until(lambda: fleet.accepted >= accepted + RIGS, 15, "mining on the backup")
    await fleet.drain(10)
    assert fleet.disconnects == 0 and fleet.pending == 0 and fleet.lost == 0
    fleet.resume_mining()
    assert one.view.active_pools() == ["backup"] and two.view.active_pools() == ["backup"]
    await farm.wait_polled(2, 10)
    states = farm.status()["pools"]
    assert states["primary"] == "down" and states["backup"] == "healthy"
    # each instance switched on its own, and the farm's merged timeline shows both
    switches = [e for inst in farm.instances for e in inst.events if e["kind"] == "pool_switch"]
    assert {e["instance"] for e in switches} == {"proxy-1", "proxy-2"}

    # proxy-1 dies while the rigs mine: its rigs reconnect through HAProxy and land on proxy-2
    accepted = fleet.accepted
    await fleet.wait_until(lambda: fleet.accepted >= accepted + RIGS // 2, 15, "mining again")
    moved = one.view.rig_count()
    await one.stop()
    await fleet.wait_until(lambda: two.view.rig_count() == RIGS and fleet.authorized == RIGS, 20,
                           "every rig on proxy-2")
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 10,
                           "every rig working again")
    assert fleet.disconnects == moved  # only the dead instance's rigs reconnected, once each
    await fleet.drain(10)
    assert fleet.pending == 0
    # a rig whose instance goes away can lose the submit that was on the wire at that instant
    # (it counts it like any disconnect); the rigs that stayed lost nothing
    assert fleet.lost <= moved
    assert all(r.lost == 0 for r in fleet.rigs if r.disconnects == 0)
    await farm.wait_polled(2, 10)
    status = farm.status()
    dead = next(i for i in status["instances"] if i["name"] == "proxy-1")
    assert status["instances_up"] == 1 and not dead["up"] and dead["last_error"]
    assert dead["hashrate"] == 0.0 and dead["rigs_connected"] == 0  # last known figure not counted
    assert status["rigs_connected"] == RIGS
    assert any(e["kind"] == "instance_down" and e["instance"] == "proxy-1" for e in farm.events.recent(50))
