from proxy.stratum import work

from .harness import FakeRig, connect, make_core


def test_rig_gets_folded_job_and_share_is_forwarded():
    core, io, clock = make_core()
    assert [c.pool.name for c in io.dialed] == ["primary", "backup"]
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aabbccdd", e2_size=8)
    rig = FakeRig(core, clock)
    rig.setup()
    sub = rig.answer(2)
    assert sub["result"][1] == "0000" and sub["result"][2] == 4
    notifies = rig.notifications("mining.notify")
    assert len(notifies) == 1
    coinb1 = notifies[0][2]
    assert coinb1.endswith("aabbccdd" + "0000")  # pool extranonce1 + 2 bytes padding
    # find a share at the tiny difficulty
    job = core.jobs[notifies[0][0]]
    for nonce in range(100000):
        digest = job.header_hash(b"\0\0", b"\1\2\3\4", job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            break
    mid = rig.request("mining.submit", ["farm.rig1", notifies[0][0], "01020304", f"{job.ntime:08x}",
                                        f"{nonce:08x}"])
    assert rig.answer(mid)["result"] is True
    submits = primary.requests("mining.submit")
    assert len(submits) == 1
    user, up_job, e2, ntime, nonce_hex = submits[0]["params"]
    assert up_job == "j1" and e2 == "0000" + "0000" + "01020304"
    # the pool's own rebuild gives the same hash
    n = primary.sent  # noqa: F841
    pool_hash = work.share_hash(bytes.fromhex("01000000" + "00" * 4), bytes.fromhex("aabbccdd"),
                                bytes.fromhex(e2), bytes.fromhex("ffffffff" + "22" * 20),
                                [bytes.fromhex("33" * 32)], 0x20000000, bytes.fromhex("11" * 32),
                                0x1d00ffff, int(ntime, 16), int(nonce_hex, 16))
    assert pool_hash == digest


def test_duplicate_detection_keys_on_the_random_low_bits_of_the_hash():
    """Shares at high difficulty share their leading zero bits; they are not duplicates."""
    core, io, clock = make_core()
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aabbccdd", e2_size=8, difficulty=1e-9)
    rig = FakeRig(core, clock)
    rig.setup()
    job_id = rig.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    found = []
    for nonce in range(100_000):
        digest = job.header_hash(rig.session.prefix, b"\1\2\3\4", job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            found.append(nonce)
        if len(found) == 50:
            break
    answers = []
    for nonce in found:
        mid = rig.request("mining.submit", ["farm.rig1", job_id, "01020304", f"{job.ntime:08x}",
                                            f"{nonce:08x}"])
        answers.append(rig.answer(mid)["result"])
    assert answers == [True] * 50
    mid = rig.request("mining.submit", ["farm.rig1", job_id, "01020304", f"{job.ntime:08x}",
                                        f"{found[0]:08x}"])
    assert rig.answer(mid)["error"][0] == 22
    # the key ignores the leading bytes a high difficulty zeroes
    assert all(key < (1 << 64) for key in job.seen) and len(job.seen) == 50


def test_more_upstream_connections_are_recruited_when_prefixes_run_out():
    core, io, clock = make_core(pools=[{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}],
                                extranonce_prefix_size=1)
    connect(core, io.dialed[0], clock).handshake(extranonce1="aaaaaaaa", e2_size=8)
    rigs = [FakeRig(core, clock, peer=f"10.0.{i // 250}.{i % 250}:1") for i in range(300)]
    for rig in rigs:
        rig.setup()
    assert len(io.dialed) == 2  # 256 prefixes on the first connection, a second for the rest
    second = connect(core, io.dialed[1], clock)
    second.handshake(extranonce1="bbbbbbbb", e2_size=8)
    first_conn, second_conn = io.dialed
    assert len(first_conn.rigs) == 256 and len(second_conn.rigs) == 44
    # no two rigs on one connection share a prefix, and everyone has work
    for conn in (first_conn, second_conn):
        assert len({r.prefix for r in conn.rigs.values()}) == len(conn.rigs)
    assert all(r.notifications("mining.notify") for r in rigs)
    # the rigs on the second connection get its extranonce1 folded in
    assert rigs[-1].notifications("mining.notify")[-1][2].endswith("bbbbbbbb" + "000000")
