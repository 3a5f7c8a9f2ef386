"""etcd trouble never stops a rig: one member killed changes nothing visible; quorum lost:
rigs keep mining with 0 disconnects, writes get 503, the backfill controller pauses; quorum
back: everything resumes."""

from __future__ import annotations

import uuid
from decimal import Decimal

import aiohttp

from proxy.sim import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig

from .conftest import TOKEN

DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL
PER_INSTANCE = 6
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def kinds(svc, kind: str) -> list[dict]:
    return svc.events.recent(kind=kind)


async def patch(http: aiohttp.ClientSession, svc, pool: str, body: dict) -> tuple[int, dict]:
    async with http.patch(f"http://127.0.0.1:{svc.api_port}/api/v1/pools/{pool}", json=body,
                          headers=AUTH) as resp:
        return resp.status, await resp.json()


async def test_member_loss_quorum_loss_and_back(cluster, etcd, tmp_path):
    await cluster.pool("primary", difficulty=DIFF)
    await cluster.pool("backup", difficulty=DIFF)
    market = SimMarket(SimMarketConfig(market_price=Decimal("0.000000000002"), activation_delay_s=0.2,
                                       rig_difficulty=DIFF, rig_share_interval=INTERVAL,
                                       min_amount=Decimal("0.0001"), min_limit=Decimal("100"), tick_s=0.05))
    await market.start()
    try:
        target = 2 * PER_INSTANCE * RIG_HS  # what the rigs deliver: no order is needed
        extra = {"cluster": {"etcd": etcd.endpoints, "farm": f"quorum-{uuid.uuid4().hex[:6]}",
                             "lease_ttl_s": 2, "publish_s": 0.3, "timeout_s": 1.0},
                 "rental": {"provider": "sim", "api_url": market.url, "target_hashrate": f"{target} H/s",
                            "trigger_deficit": 0.5, "trigger_after_s": 0.5, "recover_after_s": 0.5,
                            "min_order_s": 0, "max_price": "4000", "daily_budget_btc": "0.01",
                            "window_s": 2.0, "interval_s": 0.1, "pool": "primary"}}
        one = await cluster.instance("proxy-1", extra=extra)
        two = await cluster.instance("proxy-2", prefix_start=0x8000, extra=extra)
        both = (one, two)
        fleets = [await cluster.start_fleet(PER_INSTANCE, port=svc.port, share_interval=INTERVAL,
                                            worker_prefix=f"r{i}") for i, svc in enumerate(both)]
        await wait_until(lambda: sum(s.rental is not None for s in both) == 1, 5,
                         what="one instance leads the backfill controller")
        leader = next(s for s in both if s.rental is not None)
        controller = leader.rental
        assert one.cluster.leader == two.cluster.leader == leader.config.proxy.instance

        async with aiohttp.ClientSession() as http:
            # one member of three killed: nothing an operator or a rig can see changes
            etcd.kill(0)
            status, _ = await patch(http, one, "backup", {"weight": 2.0})
            assert status == 200
            await wait_until(lambda: all(s.view.pool("backup", s.now())["weight"] == 2.0 for s in both), 1.0,
                             what="the change on both instances within 1 s, one etcd member down")
            beats = [s.cluster.beats for s in both]
            await wait_until(lambda: all(s.cluster.beats >= b + 3 for s, b in zip(both, beats)), 10,
                             what="three more beats on each instance")
            assert leader.rental is controller
            assert not any(kinds(s, "cluster_etcd_unreachable") for s in both)
            assert not any(kinds(s, "rental_paused") for s in both)

            # a second member killed: no quorum
            etcd.kill(1)
            await wait_until(lambda: all(kinds(s, "cluster_etcd_unreachable") for s in both), 10,
                             what="both instances see etcd without quorum")
            await wait_until(lambda: leader.rental is None, 5, what="the controller paused")
            paused = kinds(leader, "rental_paused")
            assert len(paused) == 1 and "etcd unreachable" in paused[0]["reason"]
            status, answer = await patch(http, two, "backup", {"priority": -1})
            assert status == 503 and "etcd" in answer["error"], answer
            async with http.get(f"http://127.0.0.1:{two.api_port}/metrics") as resp:
                metrics = await resp.text()
            assert 'stratum_proxy_cluster_etcd_up{instance="proxy-2"} 0' in metrics
            assert 'stratum_proxy_cluster_leader{instance="proxy-2"} 0' in metrics
            assert all(s.view.pool("backup", s.now())["priority"] == 1 for s in both)  # nothing changed
            accepted = [f.accepted for f in fleets]
            await wait_until(lambda: all(f.accepted >= a + PER_INSTANCE for f, a in zip(fleets, accepted)),
                             10, what="the rigs keep mining without quorum")
            assert all(s.view.active_pools() == ["primary"] for s in both)

            # quorum back: etcd answers, a leader runs the controller again, writes work
            etcd.restart(0)
            etcd.restart(1)
            await wait_until(lambda: all(kinds(s, "cluster_etcd_back") for s in both), 15,
                             what="both instances see etcd back")
            await wait_until(lambda: sum(s.rental is not None for s in both) == 1, 10,
                             what="the backfill controller running again")
            status, _ = await patch(http, two, "backup", {"priority": -1})
            assert status == 200
            await wait_until(lambda: all(s.view.active_pools() == ["backup"] for s in both), 1.0,
                             what="the change on both instances within 1 s")
        assert market.create_calls == 0  # the farm delivered its target throughout
        await wait_until(lambda: all(f.rigs_with_job_containing(b"backup") == PER_INSTANCE for f in fleets),
                         10, what="every rig on the backup's job")
        for fleet in fleets:
            await fleet.drain(10)
            assert fleet.disconnects == 0 and fleet.pending == 0
    finally:
        await market.stop()
