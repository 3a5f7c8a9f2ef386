"""Failover decisions in the sans-I/O core, on the injected clock."""

from __future__ import annotations

from proxy.core.health import PoolHealth
from proxy.core.sharepath import LOST_UNSENT
from proxy.core.upstream import ConnState

from .harness import FakeRig, connect, make_core, make_notify


def _setup(n_rigs: int = 3, **proxy):
    core, io, clock = make_core(**proxy)
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8, notify=make_notify("p1", tag="01"))
    backup = connect(core, io.dialed[1], clock)
    backup.handshake(extranonce1="bbbbbbbb", e2_size=8, difficulty=2e-9,
                     notify=make_notify("b1", tag="02"))
    rigs = []
    for i in range(n_rigs):
        rig = FakeRig(core, clock, peer=f"10.0.0.{i}:1")
        rig.setup()
        rigs.append(rig)
    return core, io, clock, primary, backup, rigs


def test_rigs_start_on_primary_and_backup_is_warm():
    core, io, clock, primary, backup, rigs = _setup()
    assert core.active_pools() == ["primary"]
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("aaaaaaaa0000")
    assert core.pools["backup"].has_ready


def test_reset_moves_every_rig_with_only_difficulty_and_notify():
    core, io, clock, primary, backup, rigs = _setup()
    before = [len(r.received) for r in rigs]
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    assert core.active_pools() == ["backup"]
    for rig, n in zip(rigs, before):
        new = rig.received[n:]
        methods = [m["method"] for m in new]
        # the backup's difficulty is higher: the rig keeps its own (issue 14), only the job moves
        assert methods == ["mining.notify"], methods
        assert new[-1]["params"][8] is True  # clean_jobs
        assert new[-1]["params"][2].endswith("bbbbbbbb0000")
        assert not rig.closed
    switch = [e for e in core.events.recent() if e["kind"] == "pool_switch"][-1]
    assert switch["from_pools"] == ["primary"] and switch["to_pools"] == ["backup"]
    assert "reset" in switch["reason"] and switch["rigs_moved"] == 3
    assert core.pools["primary"].health.state is PoolHealth.DOWN


def test_failback_waits_for_hold_down_and_flapping_does_not_bounce():
    core, io, clock, primary, backup, rigs = _setup(failback_hold_s=60)
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    # the core redials the primary after its backoff
    clock.advance(1)
    core.tick(clock.now)
    redial = io.dialed[-1]
    assert redial.pool.name == "primary"
    p2 = connect(core, redial, clock)
    p2.handshake(extranonce1="cccccccc", e2_size=8, notify=make_notify("p2", tag="03"))
    assert core.pools["primary"].health.state is PoolHealth.HEALTHY
    assert core.active_pools() == ["backup"]  # hold-down
    clock.advance(30)
    core.tick(clock.now)
    assert core.active_pools() == ["backup"]
    # flap: fails again inside the hold-down, comes back, hold-down restarts
    core.pool_closed(p2.conn, "connection reset by pool", clock.now)
    clock.advance(2)
    core.tick(clock.now)
    p3 = connect(core, io.dialed[-1], clock)
    p3.handshake(extranonce1="dddddddd", e2_size=8, notify=make_notify("p3", tag="04"))
    clock.advance(59)
    core.tick(clock.now)
    assert core.active_pools() == ["backup"]
    clock.advance(2)
    core.tick(clock.now)
    assert core.active_pools() == ["primary"]
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("dddddddd0000")
        assert not rig.closed
    # once the hold-down is over, ticks do not re-plan the farm again and again
    events_before = len(core.events)
    heard = [len(rig.received) for rig in rigs]
    for _ in range(100):
        clock.advance(0.05)
        next_run = core.tick(clock.now)
        assert next_run > clock.now  # nothing is due again at once
    assert len(core.events) == events_before
    assert [len(rig.received) for rig in rigs] == heard


def test_silent_pool_is_left_after_the_timeout_and_shares_are_counted():
    core, io, clock, primary, backup, rigs = _setup(silent_timeout_s=4)
    rig = rigs[0]
    job_id = rig.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    nonce = _find_nonce(job, rig.session.prefix)
    mid = rig.request("mining.submit", ["farm.rig1", job_id, "01020304", f"{job.ntime:08x}",
                                        f"{nonce:08x}"])
    assert rig.answer(mid)["result"] is True  # answered at once, pool silent
    clock.advance(3.9)
    core.tick(clock.now)
    assert core.active_pools() == ["primary"]
    clock.advance(0.2)
    core.tick(clock.now)
    assert core.active_pools() == ["backup"]
    counters = core.pools["primary"].counters
    assert counters.timeouts == 1 and counters.forwarded == 1
    assert sum(counters.lost.values()) == 0  # counted once, as a timeout


def test_share_in_flight_when_the_pool_dies_is_answered_and_counted_lost():
    core, io, clock, primary, backup, rigs = _setup()
    rig = rigs[0]
    job_id = rig.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    nonce = _find_nonce(job, rig.session.prefix)
    mid = rig.request("mining.submit", ["farm.rig1", job_id, "01020304", f"{job.ntime:08x}",
                                        f"{nonce:08x}"])
    assert rig.answer(mid)["result"] is True
    counters = core.pools["primary"].counters
    # owed to the primary (forwarded) and lost, with the reason: the per-pool identity holds
    assert counters.lost == {LOST_UNSENT: 1} and counters.forwarded == 1
    # after the grace period the dead job is gone and a late share is stale
    clock.advance(31)
    core.tick(clock.now)
    assert job_id not in core.jobs


def test_both_down_keeps_rigs_and_sends_keepalive_then_resumes():
    core, io, clock, primary, backup, rigs = _setup(keepalive_s=30)
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    core.pool_closed(backup.conn, "connection refused", clock.now)
    assert core.active_pools() == []
    n = len(rigs[0].received)
    for _ in range(31):
        clock.advance(1)
        core.tick(clock.now)
    keepalive = rigs[0].received[n:]
    assert keepalive and all(m["method"] == "mining.notify" for m in keepalive)
    assert keepalive[-1]["params"][8] is False
    # a backup redial succeeds: work resumes at once (nothing better is usable)
    conn = [c for c in io.dialed if c.pool.name == "backup" and c.state is ConnState.DIALING][-1]
    link = connect(core, conn, clock)
    link.handshake(extranonce1="eeeeeeee", e2_size=8, notify=make_notify("b2", tag="05"))
    assert core.active_pools() == ["backup"]
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("eeeeeeee0000")
        assert not rig.closed


def test_version_mask_follows_the_pool():
    core, io, clock = make_core()
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8, mask="1fffe000")
    backup = connect(core, io.dialed[1], clock)
    backup.handshake(extranonce1="bbbbbbbb", e2_size=8, mask="00ffe000")
    rig = FakeRig(core, clock)
    rig.setup(mask="ffffffff")
    assert rig.answer(1)["result"]["version-rolling.mask"] == "1fffe000"
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    assert rig.notifications("mining.set_version_mask")[-1] == ["00ffe000"]
    assert rig.session.version_mask == 0x00FFE000


def test_pool_set_extranonce_and_reconnect_are_absorbed():
    core, io, clock, primary, backup, rigs = _setup()
    primary.feed({"id": None, "method": "mining.set_extranonce", "params": ["12345678", 8]})
    primary.feed({"id": None, "method": "mining.notify", "params": make_notify("p9")})
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("123456780000")
        assert not rig.notifications("mining.set_extranonce")
    primary.feed({"id": None, "method": "client.reconnect", "params": []})
    newconn = io.dialed[-1]
    assert newconn.pool.name == "primary" and newconn.replaces is primary.conn
    link = connect(core, newconn, clock)
    link.handshake(extranonce1="77777777", e2_size=8, notify=make_notify("q1"))
    assert primary.conn.state is ConnState.CLOSED
    assert core.active_pools() == ["primary"]
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("777777770000")
        assert not rig.notifications("client.reconnect")


def test_narrow_pool_is_reported_and_new_rigs_get_its_extranonce():
    core, io, clock = make_core()
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=4)
    assert "extranonce2_size 4 < 6" in core.pools["primary"].narrow
    assert core.active_pools() == ["primary"]
    rig = FakeRig(core, clock)
    rig.setup()
    # the rig is subscribed straight onto the pool's own extranonce (its own connection)
    sub = rig.answer(2)
    assert sub["result"][1:] == ["aaaaaaaa", 4]
    assert rig.notifications("mining.notify")[-1][2] == "01000000" + "00" * 4  # coinb1 unchanged
    # a second rig needs a second upstream connection
    rig2 = FakeRig(core, clock, peer="10.0.0.2:1")
    rig2.setup()
    assert rig2.answer(2) is None  # held until its connection has the pool's extranonce
    conn2 = io.dialed[-1]
    assert conn2.pool.name == "primary" and conn2 is not primary.conn
    connect(core, conn2, clock).handshake(extranonce1="bbbbbbbb", e2_size=4)
    assert rig2.answer(2)["result"][1:] == ["bbbbbbbb", 4]
    job_id = rig2.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    nonce = _find_nonce(job, bytes.fromhex("bbbbbbbb"))
    mid = rig2.request("mining.submit", ["farm.rig1", job_id, "01020304", f"{job.ntime:08x}",
                                         f"{nonce:08x}"])
    assert rig2.answer(mid)["result"] is True
    forwarded = [m for m in conn2.pool.connections.values() if m is conn2]
    assert forwarded


def test_failover_to_a_narrow_backup_uses_set_extranonce_or_reconnect():
    core, io, clock = make_core()
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8)
    backup = connect(core, io.dialed[1], clock)
    backup.handshake(extranonce1="bbbbbbbb", e2_size=4)
    assert core.pools["backup"].narrow
    xsub = FakeRig(core, clock, peer="10.0.0.1:1")
    xsub.request("mining.extranonce.subscribe", [])
    xsub.setup()
    plain = FakeRig(core, clock, peer="10.0.0.2:1")
    plain.setup()
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    # the backup's warm connection takes the first rig; the second needs a new connection
    new_conns = [c for c in io.dialed if c.pool.name == "backup" and c.state is ConnState.DIALING]
    for i, conn in enumerate(new_conns):
        connect(core, conn, clock).handshake(extranonce1=f"cccccc{i:02x}", e2_size=4)
    assert xsub.notifications("mining.set_extranonce")
    assert plain.notifications("client.reconnect") == [[]]
    switch = [e for e in core.events.recent() if e["kind"] == "pool_switch"][-1]
    assert switch["to_pools"] == ["backup"]
    # the events say how many rigs needed an extranonce change, and how: at the switch (the
    # warm connection) and when the connections dialed for the other rigs came up
    total: dict[str, int] = {}
    for e in core.events.recent():
        if e["kind"] in ("pool_switch", "rigs_extranonce_changed"):
            for how, n in e.get("extranonce_changes", {}).items():
                total[how] = total.get(how, 0) + n
    assert switch["extranonce_changes"] == {"set_extranonce": 1}
    assert total == {"set_extranonce": 1, "client.reconnect": 1}


def _find_nonce(job, extranonce1: bytes) -> int:
    for nonce in range(1_000_000):
        digest = job.header_hash(extranonce1, b"\1\2\3\4", job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            return nonce
    raise AssertionError("no nonce")
