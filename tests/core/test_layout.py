"""The extranonce layout chosen from the pools (issue 14), on the injected clock."""

from __future__ import annotations

import pytest

from proxy.core.layout import choose

from .harness import FakeRig, connect, make_core, make_notify

AUTO = {"extranonce_prefix_size": "auto", "extranonce2_size": "auto"}


@pytest.mark.parametrize("sizes,layout", [
    ([8, 8], (2, 4)), ([8, 6], (2, 4)), ([8, 5], (1, 4)), ([8, 4], (1, 3)), ([4, 4], (1, 3)),
    ([8, 3], (0, 3)), ([], (2, 4)),
])
def test_the_widest_layout_that_fits_every_pool(sizes, layout):
    assert choose(sizes) == layout


def _responses(rig: FakeRig, msg_id: int) -> list[dict]:
    return [m for m in rig.received if "method" not in m and m.get("id") == msg_id]


@pytest.mark.parametrize("primary_e2,backup_e2", [(8, 4), (4, 8)])
@pytest.mark.parametrize("rig_first", [True, False])
def test_pools_of_8_and_4_fail_over_and_back_with_no_extranonce_change(primary_e2, backup_e2, rig_first):
    core, io, clock = make_core(failback_hold_s=10, **AUTO)
    early = FakeRig(core, clock, peer="10.0.0.1:1")
    if rig_first:
        early.setup(mask=None)
        assert _responses(early, 1) == []  # held: the pools' sizes are not known yet
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=primary_e2, notify=make_notify("p1", tag="01"))
    backup = connect(core, io.dialed[1], clock)
    backup.handshake(extranonce1="bbbbbbbb", e2_size=backup_e2, notify=make_notify("b1", tag="02"))
    status = core.layout.view()
    assert (status["prefix_size"], status["extranonce2_size"]) == (1, 3)
    assert "smallest extranonce2_size is 4" in status["reason"]
    if not rig_first:
        early.setup(mask=None)
    late = FakeRig(core, clock, peer="10.0.0.2:1")
    late.setup(mask=None)
    rigs = [early, late]
    for rig in rigs:
        (answer,) = _responses(rig, 1)
        assert len(bytes.fromhex(answer["result"][1])) == 1 and answer["result"][2] == 3
        assert rig.notifications("mining.notify")[-1][2].endswith("aaaaaaaa" + "00" * (primary_e2 - 4))
    assert not core.pools["primary"].narrow and not core.pools["backup"].narrow
    # failover and failback: only difficulty, mask and jobs; never the extranonce
    core.pool_closed(primary.conn, "connection reset by pool", clock.now)
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("bbbbbbbb" + "00" * (backup_e2 - 4))
    clock.advance(1)
    core.tick(clock.now)
    again = connect(core, io.dialed[-1], clock)
    again.handshake(extranonce1="cccccccc", e2_size=primary_e2, notify=make_notify("p2", tag="01"))
    clock.advance(11)
    core.tick(clock.now)
    assert core.active_pools() == ["primary"]
    for rig in rigs:
        assert rig.notifications("mining.notify")[-1][2].endswith("cccccccc" + "00" * (primary_e2 - 4))
        assert rig.notifications("client.reconnect") == []
        assert rig.notifications("mining.set_extranonce") == []
        assert not rig.closed


def test_a_pool_that_never_answers_is_not_waited_for_past_layout_wait():
    core, io, clock = make_core(layout_wait_s=3.0, **AUTO)
    rig = FakeRig(core, clock)
    rig.setup(mask=None)
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8)
    assert not core.layout.decided  # the backup has not said its size
    clock.advance(3.0)
    core.tick(clock.now)
    assert core.layout.decided and (core.layout.prefix_size, core.layout.e2_size) == (2, 4)
    assert "not heard within layout_wait_s: backup" in core.layout.reason
    (answer,) = _responses(rig, 1)
    assert answer["result"][2] == 4


def test_sizes_remembered_from_before_a_restart_count_when_that_pool_is_down():
    core, io, clock = make_core(layout_wait_s=3.0, **AUTO)
    core.layout.remembered.update({"backup": 4})  # as the service loads them from the history
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8)
    core.pool_closed(io.dialed[1], "connection refused", clock.now)
    clock.advance(3.0)
    core.tick(clock.now)
    assert (core.layout.prefix_size, core.layout.e2_size) == (1, 3)
    assert "remembered" in core.layout.reason
    events = [e for e in core.events.recent() if e["kind"] in ("pool_extranonce", "extranonce_layout")]
    assert [e["kind"] for e in events] == ["pool_extranonce", "extranonce_layout"]
    assert events[0] == {**events[0], "pool": "primary", "extranonce2_size": 8}


def test_a_pool_narrower_than_the_layout_later_takes_the_narrow_path_with_an_event():
    core, io, clock = make_core(**AUTO)
    primary = connect(core, io.dialed[0], clock)
    primary.handshake(extranonce1="aaaaaaaa", e2_size=8)
    backup = connect(core, io.dialed[1], clock)
    backup.handshake(extranonce1="bbbbbbbb", e2_size=8)
    assert (core.layout.prefix_size, core.layout.e2_size) == (2, 4)
    backup.feed({"id": None, "method": "mining.set_extranonce", "params": ["bbbb", 3]})
    assert "extranonce2_size 3 < 6" in core.pools["backup"].narrow
    kinds = [e["kind"] for e in core.events.recent()]
    assert "pool_narrow" in kinds and kinds.count("pool_extranonce") == 3
