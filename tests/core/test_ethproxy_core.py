"""The getwork dialect's core (eth_submitLogin / eth_getWork / eth_submitWork) on the
injected clock: held login, work pushed and asked for, shares forwarded as found to the
pool whose work they are for, checks, and a switch that is nothing but new work."""

from __future__ import annotations

from proxy.config import load_dict
from proxy.core.ethproxy_core import EthProxyCore
from tests.core.harness import Clock, FakeIO, FakePoolLink, FakeRig

SEED = "0x" + "55" * 32
TARGET = "0x00000000ffff" + "0" * 52


def make_core() -> tuple[EthProxyCore, FakeIO, Clock]:
    cfg = load_dict(
        {
            "proxy": {"protocol": "ethproxy"},
            "pools": [
                {"name": "primary", "url": "stratum+tcp://127.0.0.1:1", "user": "0xacct", "priority": 0},
                {"name": "backup", "url": "stratum+tcp://127.0.0.1:2", "user": "0xacct", "priority": 1},
            ],
        }
    )
    io = FakeIO()
    clock = Clock()
    return EthProxyCore(cfg, io, clock.now), io, clock


def up(core: EthProxyCore, io: FakeIO, clock: Clock, index: int, header: str) -> FakePoolLink:
    conn = io.dialed[index]
    link = FakePoolLink(core, conn, clock)  # type: ignore[arg-type]
    core.pool_connected(conn, link.write, clock.now)
    login, getwork = link.sent
    assert login["method"] == "eth_submitLogin" and login["params"][0] == "0xacct"
    assert getwork["method"] == "eth_getWork"
    link.feed({"id": login["id"], "jsonrpc": "2.0", "result": True})
    link.feed({"id": getwork["id"], "jsonrpc": "2.0", "result": ["0x" + header, SEED, TARGET]})
    return link


def test_getwork_rigs_mine_through_the_proxy_and_move_by_new_work_alone():
    core, io, clock = make_core()
    rig = FakeRig(core, clock)  # type: ignore[arg-type]
    login = rig.request("eth_submitLogin", ["0xwallet.rig1", "x"])
    assert rig.answer(login)["result"] is True
    early = rig.request("eth_getWork", [])
    assert rig.answer(early)["error"][1] == "no work yet"  # no pool is up yet
    primary = up(core, io, clock, 0, "aa" * 32)
    up(core, io, clock, 1, "bb" * 32)
    assert rig.received[-1] == {"id": 0, "jsonrpc": "2.0", "result": ["0x" + "aa" * 32, SEED, TARGET]}
    work = rig.request("eth_getWork", [])
    assert rig.answer(work)["result"][0] == "0x" + "aa" * 32
    share = ["0x0102030405060708", "0x" + "aa" * 32, "0x" + "cc" * 32]
    msg_id = rig.request("eth_submitWork", share)
    assert primary.requests("eth_submitWork")[-1]["params"] == share  # as the rig found it
    assert rig.answer(msg_id) is None  # the pool's verdict answers it
    primary.feed({"id": primary.requests("eth_submitWork")[-1]["id"], "jsonrpc": "2.0", "result": False})
    assert rig.answer(msg_id)["error"][1] == "rejected by pool: rejected"
    assert core.pools["primary"].counters.rejected == {"rejected": 1}
    for params, reason in (
        (share, "duplicate share"),
        (["0x0102030405060709", "0x" + "dd" * 32, "0x" + "cc" * 32], "job not found"),
        (["0x0102", "0x" + "aa" * 32, "0x" + "cc" * 32], "nonce has 2 bytes, expected 8"),
    ):
        msg_id = rig.request("eth_submitWork", params)
        assert rig.answer(msg_id)["error"][1] == reason
    assert rig.answer(rig.request("eth_submitHashrate", ["0x10", "0x01"]))["result"] is True
    sub = rig.request("mining.subscribe", ["ethminer", "EthereumStratum/1.0.0"])
    assert "getwork dialect" in rig.answer(sub)["error"][1]
    core.pool_closed(primary.conn, "connection reset by pool", clock.advance(0.1))  # type: ignore[arg-type]
    assert rig.received[-1]["result"][0] == "0x" + "bb" * 32  # the backup's work, pushed
    assert not rig.notifications("client.reconnect") and not rig.notifications("mining.set_extranonce")
    assert not rig.closed and core.active_pools() == ["backup"]


def test_the_first_request_picks_the_dialect_on_a_port_for_both():
    from proxy.core.dialects import DialectRouter
    from proxy.core.eth_core import EthCore

    getwork, io, clock = make_core()
    cfg = load_dict(
        {
            "proxy": {"protocol": "ethstratum"},
            "pools": [{"name": "es", "url": "stratum+tcp://127.0.0.1:3", "user": "u"}],
        }
    )
    stratum = EthCore(cfg, FakeIO(), clock.now)
    router = DialectRouter(stratum, getwork, max_line=1024)
    out: list[bytes] = []
    a = router.rig_connected("10.0.0.1:1", out.append, lambda: None, clock.now)
    router.rig_data(a, b'{"id": 1, "method": "eth_submit', clock.now)  # half a line: held
    assert a.session is None and not getwork.rigs
    router.rig_data(a, b'Login", "params": ["0xw"]}\n', clock.now)
    assert a.core is getwork and len(getwork.rigs) == 1 and b'"result":true' in out[-1]
    b = router.rig_connected("10.0.0.1:2", out.append, lambda: None, clock.now)
    router.rig_data(
        b, b'{"id": 1, "method": "mining.subscribe", "params": ["x", "EthereumStratum/1.0.0"]}\n', clock.now
    )
    assert b.core is stratum and len(stratum.rigs) == 1
    closed: list[bool] = []
    c = router.rig_connected("10.0.0.1:3", out.append, lambda: closed.append(True), clock.now)
    router.rig_data(c, b"not json\n", clock.now)  # garbage goes to a core, which closes it
    assert closed == [True]
    router.rig_closed(a, clock.now)
    router.rig_closed(b, clock.now)
    assert not getwork.rigs and not stratum.rigs
    assert router.counts == {"ethproxy": 1, "ethstratum": 2}
