"""Hostile or broken rigs cost only themselves: limits and timeouts on the injected clock."""

from __future__ import annotations

from .harness import FakeRig, connect, make_core


def _core(**proxy):
    core, io, clock = make_core(**proxy)
    connect(core, io.dialed[0], clock).handshake(extranonce1="aabbccdd", e2_size=8)
    return core, io, clock


def test_rig_that_never_authorizes_is_closed_after_the_timeout():
    core, io, clock = _core(auth_timeout_s=10)
    idle = FakeRig(core, clock, peer="10.0.0.9:1")
    half = FakeRig(core, clock, peer="10.0.0.8:1")
    half.request("mining.subscribe", [])
    good = FakeRig(core, clock, peer="10.0.0.7:1")
    good.setup()
    clock.advance(9.9)
    core.tick(clock.now)
    assert not idle.closed and not half.closed
    clock.advance(0.2)
    core.tick(clock.now)
    assert idle.closed and half.closed and not good.closed
    assert core.totals["rigs_timed_out"] == 2
    assert set(core.rigs) == {good.session.rig_id}


def test_connection_limits_total_and_per_address():
    core, io, clock = _core(max_rigs=3, max_rigs_per_address=2)
    a1 = FakeRig(core, clock, peer="10.0.0.1:1")
    a2 = FakeRig(core, clock, peer="10.0.0.1:2")
    a3 = FakeRig(core, clock, peer="10.0.0.1:3")
    assert not a1.closed and not a2.closed and a3.closed
    b1 = FakeRig(core, clock, peer="10.0.0.2:1")
    b2 = FakeRig(core, clock, peer="10.0.0.2:2")
    assert not b1.closed and b2.closed  # the total of 3 is reached
    # a freed slot is reusable
    core.close_rig(a1.session, "test", clock.now)
    a4 = FakeRig(core, clock, peer="10.0.0.1:4")
    assert not a4.closed
    assert core.totals["rigs_refused"] == 2  # a3 (per address) and b2 (total)


def test_request_flood_is_refused_then_closed_and_costs_nobody_else():
    core, io, clock = _core(max_requests_per_s=10)
    good = FakeRig(core, clock, peer="10.0.0.1:1")
    good.setup()
    flood = FakeRig(core, clock, peer="10.0.0.2:1")
    flood.setup()
    line = b'{"id":9,"method":"mining.suggest_difficulty","params":[1]}\n'
    flood.send_raw(line * 30)  # within the burst of 40: all answered
    assert len([m for m in flood.received if m.get("id") == 9]) == 30
    flood.send_raw(line * 20)  # beyond the burst: refused with a reason
    assert any(m.get("error") and "rate limited" in m["error"][1] for m in flood.received)
    assert core.totals["rate_limited"] >= 10
    flood.send_raw(line * 1200)  # keeps on: closed
    assert flood.closed
    # the other rig is untouched and still answered
    mid = good.request("mining.suggest_difficulty", [1])
    assert good.answer(mid)["result"] is True and not good.closed
    # a rig that slows down is served again as its bucket refills
    slow = FakeRig(core, clock, peer="10.0.0.3:1")
    slow.setup()
    slow.send_raw(line * 60)
    clock.advance(1.0)
    before = len(slow.received)
    slow.send_raw(line * 5)
    assert len([m for m in slow.received[before:] if m.get("id") == 9]) == 5


def test_worker_allow_list():
    core, io, clock = _core(allowed_workers=["farm.rig*", "site2.*"])
    ok = FakeRig(core, clock, peer="10.0.0.1:1")
    ok.setup()  # authorizes as farm.rig1
    assert ok.answer(3)["result"] is True and ok.notifications("mining.notify")
    other = FakeRig(core, clock, peer="10.0.0.2:1")
    other.request("mining.subscribe", [])
    mid = other.request("mining.authorize", ["intruder.x", "x"])
    answer = other.answer(mid)
    assert answer["error"][0] == 24 and "not allowed" in answer["error"][1]
    assert not other.notifications("mining.notify") and not other.closed


def test_public_api_without_a_real_token_refuses_to_start():
    import pytest

    from proxy.config import ConfigError, load_dict

    pools = [{"name": "p", "url": "stratum+tcp://127.0.0.1:1", "user": "u"}]
    for token in ("", "change-me"):
        with pytest.raises(ConfigError, match="api.token"):
            load_dict({"api": {"listen": "0.0.0.0:8080", "token": token}, "pools": pools})
    load_dict({"api": {"listen": "0.0.0.0:8080", "token": "s3cret-long"}, "pools": pools})
    load_dict({"api": {"listen": "127.0.0.1:8080", "token": ""}, "pools": pools})
    load_dict({"api": {"listen": "0.0.0.0:8080", "enabled": False}, "pools": pools})
