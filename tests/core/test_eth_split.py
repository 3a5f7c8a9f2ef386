"""GPU pools' weighted split over time (set_extranonce + a clean job per move) and cold
standby, on the injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import load_dict
from proxy.core.eth_core import EthCore
from proxy.core.eth_view import EthView
from tests.core.harness import Clock, FakeIO, FakeRig
from tests.core.test_eth_core import SEED, gpu_rig, job_id, up

HEADER2 = "77" * 32


def _core(pools: list[dict[str, Any]], **proxy: Any) -> tuple[EthCore, FakeIO, Clock]:
    cfg = load_dict({"proxy": {"protocol": "ethstratum", "split_slice_s": 10.0, **proxy},
                     "pools": [{"url": f"stratum+tcp://127.0.0.1:{i + 1}", "user": "u", **p}
                               for i, p in enumerate(pools)]})
    io, clock = FakeIO(), Clock()
    return EthCore(cfg, io, clock.now), io, clock


def _mine(core: EthCore, clock: Clock, links: list, rigs: list[FakeRig], minutes: int,
          seeds: tuple[str, ...] = (SEED, SEED)) -> None:
    """Every rig submits a share every 2 s; the pools accept every one and send a job a minute."""
    answered: set[tuple[int, int]] = set()
    nonce = 0
    for step in range(minutes * 30):
        clock.advance(2.0)
        if step % 30 == 0:
            for link, seed in zip(links, seeds):
                job = [f"j{step}", seed, HEADER2, False]
                link.feed({"id": None, "method": "mining.notify", "params": job})
        for rig in rigs:
            nonce += 1
            rig.request("mining.submit", ["farm.gpu1", job_id(rig), f"{nonce:010x}"])
        for i, link in enumerate(links):
            for req in link.requests("mining.submit"):
                if (i, req["id"]) not in answered:
                    answered.add((i, req["id"]))
                    link.feed({"id": req["id"], "result": True, "error": None})
        core.tick(clock.now)


@pytest.mark.parametrize("n_rigs", [2, 20])
def test_gpu_weights_are_met_over_time_by_set_extranonce(n_rigs):
    core, io, clock = _core([{"name": "a", "weight": 70.0}, {"name": "b", "weight": 30.0}])
    links = [up(core, io, clock, 0, "a1b2"), up(core, io, clock, 1, "c3d4")]
    rigs = [gpu_rig(core, clock) for _ in range(n_rigs)]
    refuser = gpu_rig(core, clock, extranonce_subscribe=False)  # never steered: it would reconnect
    _mine(core, clock, links, [*rigs, refuser], minutes=20)
    a, b = core.pools["a"].split_work, core.pools["b"].split_work
    assert abs(a / (a + b) - 0.70) <= 0.02, a / (a + b)
    views = {p["name"]: p for p in EthView(core).pools(clock.now)}
    assert abs(views["a"]["delivered_share"] - 0.70) <= 0.02
    moves = core.totals["split_moves"]
    assert 0 < moves <= 120 * max(1, n_rigs // 10)  # far fewer than a rig per slice
    assert sum(len(r.notifications("mining.set_extranonce")) for r in rigs) == moves
    assert not refuser.notifications("client.reconnect") and not refuser.closed
    assert all(not r.closed and not r.notifications("client.reconnect") for r in rigs)
    # no share was refused by the proxy across the moves (each went to the pool it was mined for)
    assert sum(sum(r.session.rejected.values()) for r in rigs) == 0


def test_no_time_slicing_between_pools_of_different_epochs():
    core, io, clock = _core([{"name": "a", "weight": 70.0}, {"name": "b", "weight": 30.0}])
    links = [up(core, io, clock, 0, "a1b2"), up(core, io, clock, 1, "c3d4")]
    rigs = [gpu_rig(core, clock) for _ in range(2)]
    _mine(core, clock, links, rigs, minutes=3, seeds=(SEED, "99" * 32))  # b is on another epoch
    assert core.totals["split_moves"] == 0  # a DAG rebuild per move would cost more than the split
    assert {n: core.pools[n].rig_count() for n in "ab"} == {"a": 1, "b": 1}  # the count split


def test_a_cold_gpu_standby_is_dialled_only_when_needed():
    core, io, clock = _core([{"name": "primary", "priority": 0},
                             {"name": "backup", "priority": 1, "standby": "cold"}])
    assert [c.pool.name for c in io.dialed] == ["primary", "backup"]  # nothing usable yet: both
    primary = up(core, io, clock, 0, "a1b2")
    rig = gpu_rig(core, clock)
    core.tick(clock.advance(1.0))
    assert io.dialed[1] in io.closed and not core.pools["backup"].connections  # not needed: closed
    core.tick(clock.advance(30.0))
    assert len(io.dialed) == 2  # and not redialled while the primary serves
    core.pool_closed(primary.conn, "connection reset by pool", clock.advance(0.1))  # type: ignore[arg-type]
    assert [c.pool.name for c in io.dialed[2:]] == ["backup"]  # dialled at once
    assert core.active_pools() == []  # the rig keeps its last job while the backup connects
    up(core, io, clock, 2, "c3d4")
    assert core.active_pools() == ["backup"]
    assert rig.notifications("mining.set_extranonce")[-1][0].startswith("c3d4")
    core.tick(clock.advance(1.0))
    assert core.pools["backup"].connections  # holding the rig: kept
    assert not rig.closed and not rig.notifications("client.reconnect")


def test_getwork_rigs_are_time_sliced_by_pushing_the_other_pools_work():
    from proxy.core.ethproxy_core import EthProxyCore
    from tests.core import test_ethproxy_core as getwork

    cfg = load_dict({"proxy": {"protocol": "ethproxy", "split_slice_s": 10.0}, "pools": [
        {"name": "a", "url": "stratum+tcp://127.0.0.1:1", "user": "0xacct", "weight": 70.0},
        {"name": "b", "url": "stratum+tcp://127.0.0.1:2", "user": "0xacct", "weight": 30.0}]})
    io, clock = FakeIO(), Clock()
    core = EthProxyCore(cfg, io, clock.now)
    links = [getwork.up(core, io, clock, 0, "aa" * 32), getwork.up(core, io, clock, 1, "bb" * 32)]  # type: ignore[arg-type]
    rigs = []
    for i in range(2):
        rig = FakeRig(core, clock)  # type: ignore[arg-type]
        rig.request("eth_submitLogin", [f"0xwallet.rig{i}", "x"])
        rigs.append(rig)
    answered: set[tuple[int, int]] = set()
    nonce = 0
    for _step in range(600):  # a share per rig every 2 s for 20 minutes
        clock.advance(2.0)
        for rig in rigs:
            nonce += 1
            header = [m for m in rig.received if m.get("id") == 0][-1]["result"][0]  # its latest work
            rig.request("eth_submitWork", [f"0x{nonce:016x}", header, "0x" + "cc" * 32])
        for i, link in enumerate(links):
            for req in link.requests("eth_submitWork"):
                if (i, req["id"]) not in answered:
                    answered.add((i, req["id"]))
                    link.feed({"id": req["id"], "jsonrpc": "2.0", "result": True})
            link.conn.job_at = clock.now  # the scripted pools stay fresh
        core.tick(clock.now)
    a, b = core.pools["a"].split_work, core.pools["b"].split_work
    assert abs(a / (a + b) - 0.70) <= 0.02, a / (a + b)
    assert core.totals["split_moves"] > 0 and core.totals["set_extranonce"] == 0
    assert all(not r.closed and not r.notifications("client.reconnect") for r in rigs)
    assert sum(sum(r.session.rejected.values()) for r in rigs) == 0
