"""The EthereumStratum/1.0.0 core without sockets, on the injected clock: the share checks,
the switch fan-out (set_extranonce or client.reconnect), held subscribes, the pool's own
set_extranonce, silence, and answers for shares that lose their connection."""

from __future__ import annotations

from typing import Any

from proxy.config import load_dict
from proxy.core.eth_core import EthCore
from tests.core.harness import Clock, FakeIO, FakePoolLink, FakeRig

SEED, HEADER = "55" * 32, "66" * 32


def make_eth_core(**proxy: Any) -> tuple[EthCore, FakeIO, Clock]:
    cfg = load_dict(
        {
            "proxy": {"protocol": "ethstratum", **proxy},
            "pools": [
                {"name": "primary", "url": "stratum+tcp://127.0.0.1:1", "user": "u", "priority": 0},
                {"name": "backup", "url": "stratum+tcp://127.0.0.1:2", "user": "u", "priority": 1},
            ],
        }
    )
    io = FakeIO()
    clock = Clock()
    return EthCore(cfg, io, clock.now), io, clock


def up(core: EthCore, io: FakeIO, clock: Clock, index: int, extranonce: str, job: str = "j1") -> FakePoolLink:
    """Connect the index-th dialed connection and answer its handshake, then send a job."""
    conn = io.dialed[index]
    link = FakePoolLink(core, conn, clock)  # type: ignore[arg-type]
    core.pool_connected(conn, link.write, clock.now)
    for req in list(link.sent):
        if req["method"] == "mining.subscribe":
            assert req["params"][1] == "EthereumStratum/1.0.0"
            link.feed(
                {
                    "id": req["id"],
                    "result": [["mining.notify", "s1", "EthereumStratum/1.0.0"], extranonce],
                    "error": None,
                }
            )
        elif req["method"] == "mining.authorize":
            link.feed({"id": req["id"], "result": True, "error": None})
    link.feed({"id": None, "method": "mining.set_difficulty", "params": [0.5]})
    link.feed({"id": None, "method": "mining.notify", "params": [job, SEED, HEADER, True]})
    return link


def gpu_rig(core: EthCore, clock: Clock, extranonce_subscribe: bool = True) -> FakeRig:
    rig = FakeRig(core, clock)  # type: ignore[arg-type]
    rig.request("mining.subscribe", ["ethminer/0.19", "EthereumStratum/1.0.0"])
    if extranonce_subscribe:
        rig.request("mining.extranonce.subscribe", [])
    rig.request("mining.authorize", ["farm.gpu1", "x"])
    return rig


def job_id(rig: FakeRig) -> str:
    return rig.notifications("mining.notify")[-1][0]


def test_a_rig_mines_under_the_pool_extranonce_plus_its_prefix_and_shares_are_checked():
    core, io, clock = make_eth_core()
    primary = up(core, io, clock, 0, "a1b2")
    up(core, io, clock, 1, "c3d4")
    rig = gpu_rig(core, clock)
    extranonce = rig.answer(1)["result"][1]
    assert extranonce.startswith("a1b2") and len(extranonce) == 6  # pool's 2 bytes + a 1-byte prefix
    assert rig.notifications("mining.set_difficulty") == [[0.5]]
    assert rig.notifications("mining.notify")[-1][1:] == [SEED, HEADER, True]
    jid = job_id(rig)
    ok = rig.request("mining.submit", ["farm.gpu1", jid, "0011223344"])  # 5 bytes: 8 - 3
    forwarded = primary.requests("mining.submit")[-1]
    assert forwarded["params"] == ["u", "j1", extranonce[4:] + "0011223344"]  # prefix + rig part
    assert rig.answer(ok) is None  # answered with the pool's verdict, not before
    clock.advance(0.02)
    primary.feed({"id": forwarded["id"], "result": True, "error": None})
    assert rig.answer(ok)["result"] is True
    full = rig.request("mining.submit", ["farm.gpu1", jid, "0x" + extranonce + "5566778899"])  # all 8 bytes
    assert primary.requests("mining.submit")[-1]["params"][2] == extranonce[4:] + "5566778899"
    assert rig.answer(full) is None
    for params, reason in (
        ([jid, "0011223344"], "duplicate share"),
        (["nope", "0011223344"], "job not found"),
        ([jid, "0011"], "nonce has 2 bytes, expected 5"),
        ([jid, "ffffff" + "0011223344"], "nonce does not carry the rig's extranonce"),
    ):
        msg_id = rig.request("mining.submit", ["farm.gpu1", *params])
        assert rig.answer(msg_id)["error"][1] == reason
    assert len(primary.requests("mining.submit")) == 2
    view_latency = core.pools["primary"].latency.window(clock.now)
    assert view_latency.count == 1  # the verdict was timed as share latency


def test_a_switch_sends_set_extranonce_or_client_reconnect_and_counts_both():
    core, io, clock = make_eth_core()
    primary = up(core, io, clock, 0, "a1b2")
    up(core, io, clock, 1, "c3d4")
    taker = gpu_rig(core, clock)
    refuser = gpu_rig(core, clock, extranonce_subscribe=False)
    old_job = job_id(taker)
    in_flight = taker.request("mining.submit", ["farm.gpu1", old_job, "0011223344"])
    assert taker.answer(in_flight) is None
    core.pool_closed(primary.conn, "connection reset by pool", clock.advance(0.1))  # type: ignore[arg-type]
    prefix = taker.answer(1)["result"][1][4:]
    assert taker.notifications("mining.set_extranonce") == [["c3d4" + prefix]]
    assert taker.notifications("mining.notify")[-1][3] is True  # a clean job of the backup
    assert taker.answer(in_flight)["error"][1].startswith("share lost: pool connection gone")
    assert refuser.notifications("client.reconnect") == [[]] and not refuser.notifications(
        "mining.set_extranonce"
    )
    switch = [e for e in core.events.recent(kind="pool_switch") if e["from_pools"]][-1]
    assert switch["extranonce_changes"] == {"set_extranonce": 1, "client.reconnect": 1}
    stale = taker.request("mining.submit", ["farm.gpu1", old_job, "0011223355"])
    assert taker.answer(stale)["error"][1] == "stale: job no longer current"
    assert core.pools["primary"].counters.lost == {"connection reset by pool": 1}


def test_a_subscribe_waits_for_a_pool_and_the_old_dialect_is_refused():
    core, io, clock = make_eth_core()
    rig = gpu_rig(core, clock)
    assert rig.answer(1) is None  # no pool yet: the subscribe answer waits for an extranonce
    legacy = rig.request("eth_submitLogin", ["0xabc"])
    assert "not supported" in rig.answer(legacy)["error"][1]
    up(core, io, clock, 0, "0101")
    assert rig.answer(1)["result"][1].startswith("0101")
    assert rig.notifications("mining.notify")
    wrong = FakeRig(core, clock)  # type: ignore[arg-type]
    msg_id = wrong.request("mining.subscribe", ["cgminer/4.10", "Stratum/1.0"])
    assert "EthereumStratum/1.0.0" in wrong.answer(msg_id)["error"][1]


def test_the_pool_changing_its_extranonce_reaches_every_rig_on_the_connection():
    core, io, clock = make_eth_core()
    primary = up(core, io, clock, 0, "a1b2")
    rig = gpu_rig(core, clock)
    refuser = gpu_rig(core, clock, extranonce_subscribe=False)
    prefix = rig.answer(1)["result"][1][4:]
    primary.feed({"id": None, "method": "mining.set_extranonce", "params": ["beef"]})
    assert rig.notifications("mining.set_extranonce") == [["beef" + prefix]]
    assert refuser.notifications("client.reconnect") == [[]]
    primary.feed({"id": None, "method": "mining.notify", "params": ["j2", SEED, HEADER, True]})
    msg_id = rig.request("mining.submit", ["farm.gpu1", job_id(rig), "beef" + prefix + "0011223344"])
    assert primary.requests("mining.submit")[-1]["params"][2] == prefix + "0011223344"
    assert rig.answer(msg_id) is None


def test_a_silent_pool_is_suspect_its_shares_answered_as_timeouts_at_the_ceiling():
    core, io, clock = make_eth_core(silent_ceiling_s=2.0)
    primary = up(core, io, clock, 0, "a1b2")
    up(core, io, clock, 1, "c3d4")
    rig = gpu_rig(core, clock)
    msg_id = rig.request("mining.submit", ["farm.gpu1", job_id(rig), "0011223344"])
    core.tick(clock.advance(2.5))  # no answer past the ceiling (no latency known yet)
    assert rig.answer(msg_id)["error"][1] == "share timed out: the pool did not answer"
    assert core.pools["primary"].health.state.value == "down"
    assert core.pools["primary"].counters.timeouts == 1
    assert core.active_pools() == ["backup"] and rig.notifications("mining.set_extranonce")
    assert primary.conn in io.closed


def test_more_rigs_than_prefixes_take_more_connections_and_every_backup_stays_warm_for_all():
    core, io, clock = make_eth_core()
    primary = up(core, io, clock, 0, "a1b2")
    up(core, io, clock, 1, "c3d4")
    rigs = [gpu_rig(core, clock) for _ in range(300)]  # 300 rigs, 256 one-byte prefixes
    assert len(io.dialed) == 4 and [c.pool.name for c in io.dialed[2:]] == ["primary", "backup"]
    waiting = [r for r in rigs if r.answer(1) is None]
    assert len(waiting) == 300 - 256  # they wait for the primary's second connection
    for i in (2, 3):
        up(core, io, clock, i, "a1b3" if io.dialed[i].pool.name == "primary" else "c3d5")
    assert all(r.answer(1) is not None for r in rigs)
    for conn in core.pools["primary"].connections.values():
        assert len(conn.prefixes) == len(conn.rigs)  # no two rigs of one connection share a prefix
    core.pool_closed(primary.conn, "connection reset by pool", clock.advance(0.1))  # type: ignore[arg-type]
    moved = [r.notifications("mining.set_extranonce")[-1][0][:4] for r in rigs]
    assert sorted(set(moved)) == ["c3d4", "c3d5"] and len(moved) == 300  # all on the warm backup at once
    assert not core.waiting


def test_a_rig_that_never_authorizes_is_closed_and_one_waiting_for_a_pool_is_not():
    core, io, clock = make_eth_core(auth_timeout_s=5.0)
    silent = FakeRig(core, clock)  # type: ignore[arg-type]
    silent.request("mining.subscribe", ["ethminer/0.19", "EthereumStratum/1.0.0"])
    waiting = gpu_rig(core, clock)  # no pool is up: its subscribe answer waits
    core.tick(clock.advance(6.0))
    assert silent.closed and not waiting.closed
    assert core.totals["rigs_timed_out"] == 1


def test_hostile_gpu_rigs_cost_only_themselves():
    core, io, clock = make_eth_core(max_requests_per_s=10.0, max_line_bytes=1024)
    up(core, io, clock, 0, "a1b2")
    rig = gpu_rig(core, clock)
    for params in ([], ["w", 5, "00"], ["w", job_id(rig), "zz"], ["w", job_id(rig), "00" * 9]):
        msg_id = rig.request("mining.submit", params)
        assert rig.answer(msg_id)["error"] is not None
    bad = rig.request("mining.notify", [])
    assert "unknown method" in rig.answer(bad)["error"][1]
    rig.send_raw(b'{"id": 999, "method": ' + b"1" * 10 + b"}\n")  # not a valid request: answered
    assert rig.answer(999)["error"][1].startswith("invalid message")
    assert not rig.closed
    garbage = gpu_rig(core, clock)
    garbage.send_raw(b"this is not json\n")
    assert garbage.closed
    long_line = gpu_rig(core, clock)
    long_line.send_raw(b"x" * 2048)
    assert long_line.closed
    flood = gpu_rig(core, clock)
    for _ in range(100):
        flood.request("client.get_version", [])
    assert core.totals["rate_limited"] > 0 and not flood.closed
    assert len(core.rigs) == 2 and core.pools["primary"].counters.forwarded == 0


def test_a_pool_that_stops_sending_jobs_is_stale_and_left():
    core, io, clock = make_eth_core(max_job_age_s=150.0)
    primary = up(core, io, clock, 0, "a1b2")
    backup = up(core, io, clock, 1, "c3d4")
    rig = gpu_rig(core, clock)
    core.tick(clock.advance(100.0))
    backup.feed({"id": None, "method": "mining.notify", "params": ["j9", SEED, HEADER, True]})
    assert core.tick(clock.advance(10.0)) <= clock.now + 40.0  # the primary's job turns 150 s old then
    core.tick(clock.advance(41.0))
    assert core.pools["primary"].health.reason == "stale: no new job for 150s"
    assert core.active_pools() == ["backup"] and rig.notifications("mining.set_extranonce")
    assert primary.conn in io.closed


def test_weights_split_gpu_rigs_and_a_drain_moves_them_without_a_reconnect():
    cfg = load_dict({"proxy": {"protocol": "ethstratum"}, "pools": [
        {"name": "a", "url": "stratum+tcp://127.0.0.1:1", "user": "u", "weight": 3.0},
        {"name": "b", "url": "stratum+tcp://127.0.0.1:2", "user": "u", "weight": 1.0}]})
    io, clock = FakeIO(), Clock()
    core = EthCore(cfg, io, clock.now)
    up(core, io, clock, 0, "a1b2")
    up(core, io, clock, 1, "c3d4")
    rigs = [gpu_rig(core, clock) for _ in range(8)]
    assert {n: core.pools[n].rig_count() for n in "ab"} == {"a": 6, "b": 2}
    core.operator.drain("a", clock.advance(1.0))
    assert core.pools["b"].rig_count() == 8
    assert sum(len(r.notifications("mining.set_extranonce")) for r in rigs) == 6
    assert not any(r.notifications("client.reconnect") for r in rigs)
