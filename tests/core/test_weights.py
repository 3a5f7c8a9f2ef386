"""Weighted split over the injected clock: whole rigs and time-sliced rigs."""

from __future__ import annotations

import pytest

from .harness import FakeRig, connect, make_core, make_notify


def _weighted_core(n_rigs: int, weights=(70, 30)):
    core, io, clock = make_core(pools=[
        {"name": "a", "url": "stratum+tcp://127.0.0.1:1", "user": "u", "priority": 0,
         "weight": weights[0]},
        {"name": "b", "url": "stratum+tcp://127.0.0.1:2", "user": "u", "priority": 0,
         "weight": weights[1]},
    ], split_slice_s=10)
    for conn, ext in zip(io.dialed[:2], ("aaaaaaaa", "bbbbbbbb")):
        connect(core, conn, clock).handshake(extranonce1=ext, e2_size=8, difficulty=1e-9,
                                             notify=make_notify("j" + ext[:2]))
    rigs = []
    for i in range(n_rigs):
        rig = FakeRig(core, clock, peer=f"10.0.0.{i}:1")
        rig.setup()
        rigs.append(rig)
    return core, io, clock, rigs


def _submit_one(core, rig, counter):
    job_id = rig.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    e2 = counter.to_bytes(4, "big")
    for nonce in range(10_000):
        digest = job.header_hash(rig.session.prefix, e2, job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            break
    mid = rig.request("mining.submit", ["farm.rig1", job_id, e2.hex(), f"{job.ntime:08x}", f"{nonce:08x}"])
    assert rig.answer(mid)["result"] is True


@pytest.mark.parametrize("n_rigs", [2, 50])
def test_delivered_split_within_two_points(n_rigs):
    core, io, clock, rigs = _weighted_core(n_rigs)
    counter = 0
    # every rig submits one share every 2 simulated seconds for 20 minutes
    for _step in range(600):
        clock.advance(2.0)
        for rig in rigs:
            counter += 1
            _submit_one(core, rig, counter)
        # the pools answer every forwarded share
        for pool in core.pools.values():
            for conn in list(pool.connections.values()):
                for msg_id in list(conn.pending):
                    core.pool_data(conn, b'{"id":%d,"result":true,"error":null}\n' % msg_id, clock.now)
        core.tick(clock.now)
        for pool in core.pools.values():
            for conn in list(pool.connections.values()):
                conn.last_job_at = clock.now  # the scripted pools stay fresh
    from proxy.core.view import CoreView

    views = {v["name"]: v for v in CoreView(core).pools(clock.now)}
    assert views["a"]["goal_share"] == 0.7 and views["b"]["goal_share"] == 0.3
    assert abs(views["a"]["delivered_share"] - 0.7) <= 0.02
    a, b = core.pools["a"].split_work, core.pools["b"].split_work
    share_a = a / (a + b)
    assert abs(share_a - 0.70) <= 0.02, share_a
    assert all(not r.closed for r in rigs)
    # moves are few: far fewer than one per rig per slice
    assert core.totals["split_moves"] <= 1200 / 10 * max(1, n_rigs // 10)
