"""Issue 2 end to end: the fold, aggregation, validation and bad input over real sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from proxy.sim import wait_until
from proxy.stratum import messages
from tests.farm_fixture import check_accounting, pool_view, quiesce

VECTORS = json.loads((Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
                      / "mainnet_blocks.json").read_text())


async def _raw_rig(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer


async def _read_until(reader, predicate, timeout=5.0):
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError(f"closed; saw {seen}")
            msg = json.loads(line)
            seen.append(msg)
            if predicate(msg):
                return msg, seen


def _split_for_layout(vector, prefix_size: int, pad: int):
    """Re-split the real coinbase so that pool_ext1 | padding | prefix | rig_e2 covers the same bytes."""
    split = vector["coinbase_split"]
    full = bytes.fromhex(split["extranonce1"] + split["extranonce2"])
    rig_e2 = full[-4:]
    prefix = full[len(full) - 4 - prefix_size: len(full) - 4]
    padding = full[len(full) - 4 - prefix_size - pad: len(full) - 4 - prefix_size]
    pool_ext1 = full[: len(full) - 4 - prefix_size - pad]
    return pool_ext1, padding, prefix, rig_e2


# (prefix bytes, padding bytes): per-rig connections, aggregation, aggregation with padding.
# The proxy pads with zero bytes, so padded layouts apply to blocks with zeros at that spot.
LAYOUTS = [(0, 0), (1, 0), (2, 0), (1, 1)]
CASES = [(v, p, d) for v in VECTORS for p, d in LAYOUTS
         if not any(_split_for_layout(v, p, d)[1])]


@pytest.mark.parametrize("vector,prefix_size,pad", CASES,
                         ids=[f"{v['name']}-prefix{p}-pad{d}" for v, p, d in CASES])
async def test_mainnet_block_round_trips_through_the_proxy(farm, vector, prefix_size, pad):
    """The pool rebuilds the real block hash from what the proxy forwards."""
    pool_ext1, padding, prefix, rig_e2 = _split_for_layout(vector, prefix_size, pad)
    pool = await farm.pool("p", difficulty=1024)
    pool.set_fixed_job(vector["stratum"]["notify_params"], pool_ext1, 4 + prefix_size + pad)
    proxy = await farm.start_proxy(extranonce_prefix_size=prefix_size, extranonce2_size=4,
                                   prefix_start=int.from_bytes(prefix, "big") if prefix else 0)
    reader, writer = await _raw_rig(proxy.port)
    rolled = vector["stratum"]["version_rolling"]
    lines = []
    if rolled:
        lines.append(messages.request(1, "mining.configure", [["version-rolling"],
                                                              {"version-rolling.mask": "1fffe000"}]))
    lines.append(messages.request(2, "mining.subscribe", ["vector-rig"]))
    lines.append(messages.request(3, "mining.authorize", ["miner1.worker1", "x"]))
    writer.write(b"".join(lines))
    sub, _ = await _read_until(reader, lambda m: m.get("id") == 2)
    assert sub["result"][1] == prefix.hex() and sub["result"][2] == 4
    notify, _ = await _read_until(reader, lambda m: m.get("method") == "mining.notify")
    params = vector["stratum"]["submit_params"]
    submit = ["miner1.worker1", notify["params"][0], rig_e2.hex(), *params[3:]]
    writer.write(messages.request(4, "mining.submit", submit))
    answer, _ = await _read_until(reader, lambda m: m.get("id") == 4)
    assert answer["result"] is True, answer
    await wait_until(lambda: len(pool.shares) == 1, 5, what="the share at the pool")
    share = pool.shares[0]
    assert share.valid, share.reason
    assert share.block_hash_hex == vector["block_hash"]
    writer.close()


async def test_unrolled_version_of_block_702861_fails(farm):
    vector = next(v for v in VECTORS if v["stratum"]["version_rolling"])
    pool_ext1, _, _, rig_e2 = _split_for_layout(vector, 0, 0)
    pool = await farm.pool("p", difficulty=1024)
    pool.set_fixed_job(vector["stratum"]["notify_params"], pool_ext1, 4)
    proxy = await farm.start_proxy(extranonce_prefix_size=0, extranonce2_size=4)
    reader, writer = await _raw_rig(proxy.port)
    writer.write(messages.request(1, "mining.configure", [["version-rolling"],
                                                          {"version-rolling.mask": "1fffe000"}])
                 + messages.request(2, "mining.subscribe", [])
                 + messages.request(3, "mining.authorize", ["w", "x"]))
    notify, _ = await _read_until(reader, lambda m: m.get("method") == "mining.notify")
    params = vector["stratum"]["submit_params"]
    writer.write(messages.request(4, "mining.submit", ["w", notify["params"][0], rig_e2.hex(),
                                                       params[3], params[4]]))
    answer, _ = await _read_until(reader, lambda m: m.get("id") == 4)
    assert answer["result"] is not True
    assert answer["error"][0] == 23  # low difficulty: the header without the rolled bits
    assert list(pool.shares) == []  # nothing invalid was forwarded
    writer.close()


async def test_200_rigs_one_pool_no_disconnects_all_answered_all_valid(farm):
    pool = await farm.pool("p", extranonce2_size=8, difficulty=2**-24, job_interval=2.0)
    proxy = await farm.start_proxy()
    fleet = await farm.start_fleet(200, share_interval=1.0)
    await fleet.wait_until(lambda: fleet.accepted >= 600, 30, "600 shares accepted")
    await quiesce(farm)  # every rig submit answered, every forwarded share judged by the pool
    assert fleet.disconnects == 0
    assert fleet.pending == 0 and fleet.submitted == fleet.accepted + sum(fleet.rejected.values())
    # the only rejects allowed are stale races (a share crossing a clean job, as with any pool)
    assert set(fleet.rejected) <= {21} and fleet.rejected[21] <= fleet.submitted * 0.02
    view = pool_view(proxy, "p")
    assert len(pool.shares) == view["forwarded"]  # every forwarded share reached the pool
    invalid = [s for s in pool.shares if not s.valid]
    assert invalid == [], invalid[:3]
    assert view["accepted"] == len(pool.shares) == fleet.accepted
    check_accounting(farm, exact_pools=("p",))
    assert pool.connections == 1  # 200 rigs aggregated on one upstream connection
    # extranonce spaces are disjoint: distinct prefixes of one length, same extranonce2 size
    prefixes = {r.extranonce1 for r in fleet.rigs}
    assert len(prefixes) == 200 and {len(p) for p in prefixes} == {2}
    assert {r.extranonce2_size for r in fleet.rigs} == {4}
    # and no two shares the pool saw are the same work (the pool also checks duplicates)
    work_keys = {(s.extranonce1, s.extranonce2, s.job_id, s.nonce, s.ntime, s.version_bits)
                 for s in pool.shares}
    assert len(work_keys) == len(pool.shares)


async def test_narrow_pool_gets_per_rig_connections_with_prefix_zero(farm):
    pool = await farm.pool("p", extranonce2_size=4)
    await farm.start_proxy(extranonce_prefix_size=0, extranonce2_size=4)
    fleet = await farm.start_fleet(5, share_interval=0.3)
    await fleet.wait_until(lambda: fleet.accepted >= 15, 15, "shares")
    assert pool.connections == 5
    assert {r.extranonce1 for r in fleet.rigs} == {b""}
    await fleet.drain(5)
    assert all(s.valid for s in pool.shares) and fleet.disconnects == 0


async def test_too_narrow_pool_is_reported_and_used_only_by_extranonce_change(farm):
    """A wide primary fails over to a backup too narrow for the fold (extranonce2_size 4 <
    prefix 2 + 4): rigs that subscribed to extranonce get mining.set_extranonce, the others
    client.reconnect as the last resort; every share stays valid at the pool."""
    await farm.pool("primary", extranonce2_size=8)
    narrow = await farm.pool("narrow", extranonce2_size=4)
    proxy = await farm.start_proxy(extranonce_prefix_size=2, extranonce2_size=4)
    await wait_until(lambda: pool_view(proxy, "narrow")["narrow"], 5, what="the narrow pool reported")
    assert "extranonce2_size 4 < 6" in pool_view(proxy, "narrow")["narrow"]
    xsub = await farm.start_fleet(4, extranonce_subscribe=True, share_interval=0.3)
    plain = await farm.start_fleet(4, share_interval=0.3)
    farm.pools["primary"].reset_all()
    await farm.pools["primary"].refuse()
    for fleet in (xsub, plain):
        await fleet.wait_until(lambda f=fleet: f.rigs_with_job_containing(b"narrow") == 4, 10,
                               "every rig on the narrow pool's job")
    accepted = narrow.accepted
    await wait_until(lambda: narrow.accepted >= accepted + 20, 15, what="mining on the narrow pool")
    for fleet in (xsub, plain):
        await fleet.drain(10)
    assert all(r.set_extranonce_received == 1 and r.reconnect_requests == 0 for r in xsub.rigs)
    assert all(r.reconnect_requests == 1 for r in plain.rigs)
    assert xsub.disconnects == 0 and plain.disconnects == 0
    assert all(s.valid for s in narrow.shares), [s.reason for s in narrow.shares if not s.valid][:3]
    assert narrow.connections == 8  # one upstream connection per rig on the narrow pool
    switch = proxy.events.recent(kind="pool_switch")[-1]
    assert switch["to_pools"] == ["narrow"]
    assert switch["extranonce_changes"]["set_extranonce"] >= 1


async def test_bad_input_from_one_rig_touches_only_that_rig(farm):
    await farm.pool("p", job_interval=1.0)
    proxy = await farm.start_proxy(max_line_bytes=1024)
    fleet = await farm.start_fleet(10, share_interval=0.3)
    base = fleet.accepted

    async def bad(payload: bytes, expect_close: bool, expect_code=None):
        reader, writer = await _raw_rig(proxy.port)
        writer.write(payload)
        await writer.drain()
        if expect_close:
            async with asyncio.timeout(5):
                rest = await reader.read()
            assert rest == b"" or b"error" in rest
        else:
            msg, _ = await _read_until(reader, lambda m: m.get("error") and m.get("id") is not None)
            assert msg["error"] is not None
            if expect_code is not None:
                assert msg["error"][0] == expect_code, msg
            writer.close()

    await bad(b"\x00\x01garbage not json\n", expect_close=True)
    await bad(b"x" * 5000, expect_close=True)  # over-long line, no newline
    await bad(messages.request(1, "mining.submit", ["w", "1", "00", "00", "00"]), False, 25)
    await bad(b'{"id": 7, "method": "mining.subscribe", "params": "not a list"}\n', False)
    await bad(messages.request(1, "mining.subscribe", []) + messages.request(2, "mining.authorize", [123])
              , False, 24)
    await bad(messages.request(1, "mining.subscribe", []) + messages.request(2, "mining.authorize", ["w"])
              + messages.request(3, "mining.submit", ["w", "1", "zz", "00000000", "00000000"]), False)
    await bad(messages.request(1, "mining.teleport", []), False, -32601)
    await fleet.wait_until(lambda: fleet.accepted >= base + 20, 15, "fleet keeps mining")
    assert fleet.disconnects == 0 and set(fleet.rejected) <= {21}
