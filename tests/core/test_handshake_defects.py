"""Issue 13's three defects, each reproduced on the injected clock (these failed before the
core split): a narrow pool's subscribe answered twice, a rig that subscribed before any pool
was known sent away with client.reconnect, and a share checked against the rig's version
mask after a switch instead of the mask it had for the share's job."""

from __future__ import annotations

from .harness import FakeRig, connect, make_core, make_notify


def _responses(rig: FakeRig) -> list[dict]:
    return [m for m in rig.received if "method" not in m]


def _find_nonce(job, extranonce1: bytes, extranonce2: bytes, version: int) -> int:
    for nonce in range(1_000_000):
        digest = job.header_hash(extranonce1, extranonce2, job.ntime, nonce, version)
        if int.from_bytes(digest, "little") <= job.target:
            return nonce
    raise AssertionError("no nonce found")


def test_a_narrow_pool_answers_the_subscribe_exactly_once():
    core, io, clock = make_core()  # default layout: 2-byte prefix + 4 needs extranonce2 >= 6
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=4)
    assert core.pools["primary"].narrow
    rig = FakeRig(core, clock)
    rig.setup(mask=None)
    # the warm connection was ready: the rig takes it and is answered once, with its extranonce
    subscribe_answers = [m for m in _responses(rig) if m["id"] == 1]
    assert len(subscribe_answers) == 1
    assert subscribe_answers[0]["result"][1:] == ["aaaaaaaa", 4]
    assert [m for m in _responses(rig) if m["id"] is None] == []
    assert sorted(m["id"] for m in _responses(rig)) == [1, 2]  # subscribe, authorize
    assert rig.notifications("mining.notify")


def test_a_rig_that_subscribes_before_any_pool_is_known_gets_the_pools_layout():
    core, io, clock = make_core()
    rig = FakeRig(core, clock)
    rig.setup(mask=None)
    assert [m for m in _responses(rig) if m["id"] == 1] == []  # held: no pool is usable yet
    clock.advance(0.2)
    core.tick(clock.now)
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=4)  # too narrow for the fold
    # the rig takes the pool's warm connection, so its held answer is the pool's extranonce
    answers = [m for m in _responses(rig) if m["id"] == 1]
    assert len(answers) == 1 and answers[0]["result"][1:] == ["aaaaaaaa", 4]
    assert rig.notifications("client.reconnect") == []
    assert rig.notifications("mining.set_extranonce") == []
    # and it mines: a share with its 4-byte extranonce2 is accepted and forwarded as-is
    job_id = rig.notifications("mining.notify")[-1][0]
    job = core.jobs[job_id]
    nonce = _find_nonce(job, bytes.fromhex("aaaaaaaa"), b"\1\2\3\4", job.version)
    msg_id = rig.request("mining.submit", ["farm.rig1", job_id, "01020304", f"{job.ntime:08x}",
                                           f"{nonce:08x}"])
    assert rig.answer(msg_id)["result"] is True
    assert primary.requests("mining.submit")[-1]["params"][2] == "01020304"


def test_a_held_subscribe_is_answered_with_the_proxy_layout_after_layout_wait():
    core, io, clock = make_core(layout_wait_s=2.0)
    rig = FakeRig(core, clock)
    rig.setup(mask=None)
    assert rig.answer(1) is None
    clock.advance(1.0)
    assert core.tick(clock.now) <= clock.now + 1.0 + 1e-9  # the deadline is a timer of the core
    assert rig.answer(1) is None
    clock.advance(1.0)
    core.tick(clock.now)
    answer = rig.answer(1)
    assert answer is not None and answer["result"][2] == 4
    assert len(bytes.fromhex(answer["result"][1])) == 2  # the proxy's 2-byte prefix


def test_a_share_is_checked_against_the_mask_its_job_was_sent_with():
    core, io, clock = make_core()
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8, mask="1fffe000",
                      notify=make_notify("p1", tag="01"))
    backup = connect(core, io.dialed[1], clock)
    backup.handshake(extranonce1="bbbbbbbb", e2_size=8, mask="00ffe000",
                     notify=make_notify("b1", tag="02"))
    rig = FakeRig(core, clock)
    rig.setup(mask="ffffffff")
    old_job_id = rig.notifications("mining.notify")[-1][0]
    old_job = core.jobs[old_job_id]
    # the operator moves the farm to the backup; the primary stays up and drains
    core.operator.drain("primary", clock.now)
    assert rig.notifications("mining.set_version_mask")[-1] == ["00ffe000"]
    # a share the rig found on the primary's job with a bit the primary allows (0x10000000)
    # but the backup does not
    bits = 0x10000000
    version = (old_job.version & ~0x1FFFE000 & 0xFFFFFFFF) | bits
    nonce = _find_nonce(old_job, rig.session.prefix, b"\1\2\3\4", version)
    msg_id = rig.request("mining.submit", ["farm.rig1", old_job_id, "01020304",
                                           f"{old_job.ntime:08x}", f"{nonce:08x}", f"{bits:08x}"])
    assert rig.answer(msg_id)["result"] is True, rig.answer(msg_id)
    submits = primary.requests("mining.submit")
    assert submits and submits[-1]["params"][5] == f"{bits:08x}"
