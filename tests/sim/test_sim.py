"""The simulators on their own: the pool must judge shares like a real pool (proven on mainnet
blocks) and the rigs must mine real shares and count every fault the pool injects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.sim import RawClient, RigFleet, SimPool, SimPoolConfig
from proxy.stratum import work

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS_DIR = REPO_ROOT.parent / "shared" / "vectors"
VECTORS: list[dict[str, Any]] = json.loads((VECTORS_DIR / "mainnet_blocks.json").read_text())
ROLLED = next(v for v in VECTORS if v["stratum"].get("version_rolling"))

# --- mainnet vectors through a raw client -----------------------------------------------------

async def _vector_session(pool: SimPool, vector: dict[str, Any], configure: bool) -> RawClient:
    """Fixed-job pool + raw client: handshake and wait for the replayed notify."""
    split = vector["coinbase_split"]
    pool.set_fixed_job(vector["stratum"]["notify_params"], bytes.fromhex(split["extranonce1"]),
                       split["extranonce2_size"])
    client = await RawClient.connect("127.0.0.1", pool.port)
    if configure:
        answer = await client.call("mining.configure", [
            ["version-rolling"], {"version-rolling.mask": "1fffe000",
                                  "version-rolling.min-bit-count": 2}])
        assert answer["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
    sub = await client.call("mining.subscribe", ["vector-client"])
    assert sub["result"][1:] == [split["extranonce1"], split["extranonce2_size"]]
    auth = await client.call("mining.authorize", ["miner1.worker1", "x"])
    assert auth["result"] is True
    diff = await client.notification("mining.set_difficulty")
    assert diff["params"] == [1024]
    notify = await client.notification("mining.notify")
    assert notify["params"] == vector["stratum"]["notify_params"]
    return client


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_mainnet_vector_rebuilds_the_real_block_hash(make_pool, vector):
    async with asyncio.timeout(5):
        pool = await make_pool("vec", difficulty=1024)
        rolled = bool(vector["stratum"].get("version_rolling"))
        client = await _vector_session(pool, vector, configure=rolled)
        answer = await client.call("mining.submit", vector["stratum"]["submit_params"])
        assert answer["result"] is True and answer["error"] is None, answer
        share = pool.shares[-1]
        assert share.valid and share.reason == "ok"
        assert share.block_hash_hex == vector["block_hash"]
        assert share.extranonce1 == vector["coinbase_split"]["extranonce1"]
        assert pool.accepted == 1 and not pool.rejected
        # the same share again is a duplicate
        again = await client.call("mining.submit", vector["stratum"]["submit_params"])
        assert again["error"][0] == 22
        client.close()


async def test_block_702861_without_its_version_bits_is_low_difficulty(make_pool):
    async with asyncio.timeout(5):
        pool = await make_pool("vec", difficulty=1024)
        client = await _vector_session(pool, ROLLED, configure=True)
        five = ROLLED["stratum"]["submit_params"][:5]
        answer = await client.call("mining.submit", five)
        assert answer["result"] is not True and answer["error"][0] == 23
        share = pool.shares[-1]
        assert not share.valid and share.reason == "low_difficulty"
        negative = ROLLED["stratum"]["version_rolling"]["negative_check"]["hash"]
        assert share.block_hash_hex == negative
        # with the bits it is the real block
        answer = await client.call("mining.submit", ROLLED["stratum"]["submit_params"])
        assert answer["result"] is True
        assert pool.shares[-1].block_hash_hex == ROLLED["block_hash"]
        client.close()


async def test_version_bits_without_configure_are_outside_the_mask(make_pool):
    async with asyncio.timeout(5):
        pool = await make_pool("vec", difficulty=1024)
        client = await _vector_session(pool, ROLLED, configure=False)
        answer = await client.call("mining.submit", ROLLED["stratum"]["submit_params"])
        assert answer["error"][0] == 20
        assert pool.shares[-1].reason == "version_bits_outside_mask"
        client.close()


async def test_submit_validation_codes(make_pool):
    async with asyncio.timeout(5):
        pool = await make_pool("vec", difficulty=1024)
        vector = VECTORS[0]
        params = vector["stratum"]["submit_params"]
        client = await RawClient.connect("127.0.0.1", pool.port)
        assert (await client.call("mining.submit", params))["error"][0] == 25  # not subscribed
        client.close()
        client = await _vector_session(pool, vector, configure=False)
        assert (await client.call("mining.submit", ["nobody", *params[1:]]))["error"][0] == 24
        assert (await client.call("mining.submit", [params[0], "nojob", *params[2:]]))[
            "error"][0] == 21
        short = [params[0], params[1], params[2][:-2], *params[3:]]
        assert (await client.call("mining.submit", short))["error"][0] == 20
        late = [*params[:3], f"{int(params[3], 16) + 7201:08x}", params[4]]
        assert (await client.call("mining.submit", late))["error"][0] == 20
        bad_nonce = [*params[:4], f"{int(params[4], 16) ^ 1:08x}"]
        assert (await client.call("mining.submit", bad_nonce))["error"][0] == 23
        assert (await client.call("mining.submit", ["w"]))["error"][0] == 20
        assert (await client.call("mining.teleport", []))["error"][0] == -32601
        assert (await client.call("mining.suggest_difficulty", [0.001]))["result"] is True
        assert (await client.call("mining.extranonce.subscribe", []))["result"] is True
        assert pool.accepted == 0 and sum(pool.rejected.values()) == 7
        assert len(pool.shares) == 7 and not any(s.valid for s in pool.shares)
        client.close()


async def test_synthetic_jobs_carry_the_tag_and_unique_extranonce1(make_pool):
    async with asyncio.timeout(5):
        pool = await make_pool("alpha", tag="TAG-alpha", extranonce1_size=2, extranonce2_size=4)
        a = await RawClient.connect("127.0.0.1", pool.port)
        b = await RawClient.connect("127.0.0.1", pool.port)
        ext1 = []
        for client in (a, b):
            sub = await client.call("mining.subscribe", [])
            assert sub["result"][2] == 4 and len(sub["result"][1]) == 4
            ext1.append(sub["result"][1])
            await client.call("mining.authorize", ["w", "x"])
            notify = await client.notification("mining.notify")
            assert b"TAG-alpha" in bytes.fromhex(notify["params"][2])
            assert notify["params"][5:8] == ["20000000", "17034219", notify["params"][7]]
            assert notify["params"][8] is True
        assert ext1[0] != ext1[1]
        job_id = pool.broadcast_job()
        notify = await a.notification("mining.notify")
        assert notify["params"][0] == job_id
        assert pool.connections == 2 and pool.total_connections == 2
        a.close()
        b.close()
        await pool.wait_until(lambda: pool.connections == 0, 2, "connections closed")


# --- a fleet against the pool -------------------------------------------------------------------

async def test_fleet_of_20_mines_cleanly(make_pool, make_fleet):
    async with asyncio.timeout(12):
        pool = await make_pool("p1", job_interval=1.0)
        fleet = await make_fleet(pool, 20)
        assert pool.authorized_workers == {r.worker for r in fleet.rigs}
        await fleet.wait_until(lambda: fleet.accepted >= 100 and pool.jobs_sent >= 3, 8,
                               "100 accepted across job changes")
        await fleet.drain(5)
        assert fleet.disconnects == 0 and not fleet.rejected
        assert fleet.submitted == fleet.answered == fleet.accepted == pool.accepted
        assert all(s.valid for s in pool.shares)
        assert any(s.version_bits for s in pool.shares)  # some shares rolled version bits
        assert any(s.version_bits is None for s in pool.shares)
        assert len({r.extranonce1 for r in fleet.rigs}) == 20
        assert fleet.rigs_with_job_containing(b"p1") == 20
        assert fleet.latency_quantile(0.5) is not None
        await fleet.stop()
        assert fleet.unanswered() == 0
        await pool.wait_until(lambda: pool.connections == 0, 2, "rigs gone")


async def test_fleet_without_pipelining_or_version_rolling(make_pool, make_fleet):
    async with asyncio.timeout(8):
        pool = await make_pool("p1", extranonce1_size=0, extranonce2_size=2)
        fleet = await make_fleet(pool, 3, pipeline=False, version_rolling=False)
        await fleet.wait_until(lambda: fleet.accepted >= 6, 5, "shares")
        await fleet.drain(5)
        assert not fleet.rejected and all(s.version_bits is None for s in pool.shares)
        assert {r.extranonce1 for r in fleet.rigs} == {b""}
        assert {r.version_mask for r in fleet.rigs} == {0}


async def test_two_pools_tags_and_first_notify(make_pool, make_fleet):
    async with asyncio.timeout(8):
        p1 = await make_pool("p1")
        p2 = await make_pool("p2")
        fleet = await make_fleet(p1, 5)
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"p1") == 5, 3, "p1 job")
        assert fleet.rigs_with_job_containing(b"p2") == 0
        t0 = asyncio.get_running_loop().time()
        p1.send_reconnect("127.0.0.1", p2.port)
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"p2") == 5, 5, "p2 job")
        times = fleet.first_notify_after(t0, b"p2")
        assert all(t is not None and t >= t0 for t in times)
        assert fleet.reconnect_requests == 5 and fleet.disconnects == 0
        await fleet.wait_until(lambda: p2.accepted >= 5, 5, "mining on p2")


# --- faults -------------------------------------------------------------------------------------

async def test_reset_all_counts_disconnects_and_rigs_come_back(make_pool, make_fleet):
    async with asyncio.timeout(10):
        pool = await make_pool("p1")
        fleet = await make_fleet(pool, 10, reconnect_delay=0.1)
        await fleet.wait_until(lambda: fleet.accepted >= 10, 5, "mining")
        pool.reset_all()
        await fleet.wait_until(lambda: fleet.disconnects == 10, 3, "10 disconnects")
        await fleet.wait_until(lambda: fleet.authorized == 10, 5, "back")
        accepted = pool.accepted
        await fleet.wait_until(lambda: pool.accepted >= accepted + 10, 5, "mining again")
        assert pool.total_connections == 20
        pool.close_all()
        await fleet.wait_until(lambda: fleet.disconnects == 20, 3, "graceful close counted")


async def test_stall_leaves_submits_unanswered(make_pool, make_fleet):
    async with asyncio.timeout(8):
        pool = await make_pool("p1")
        fleet = await make_fleet(pool, 5, share_interval=0.1)
        await fleet.wait_until(lambda: fleet.accepted >= 5, 5, "mining")
        pool.stall()
        await fleet.wait_until(lambda: fleet.unanswered(older_than=0.3) >= 5, 5,
                               "unanswered submits")
        assert fleet.disconnects == 0 and pool.connections == 5
        before = pool.submits
        pool.unstall()
        await fleet.wait_until(lambda: pool.submits >= before + 5, 5, "answers again")
        await fleet.stop()
        assert fleet.unanswered() >= 5  # the ones swallowed during the stall


async def test_refuse_then_resume_on_the_same_port(make_pool, make_fleet):
    async with asyncio.timeout(10):
        pool = await make_pool("p1")
        port = pool.port
        fleet = await make_fleet(pool, 5, reconnect_delay=0.05, max_reconnect_delay=0.2)
        await pool.refuse()
        await fleet.wait_until(lambda: fleet.disconnects == 5 and fleet.connected == 0, 3,
                               "all dropped")
        failures = sum(r.connect_failures for r in fleet.rigs)
        await fleet.wait_until(lambda: sum(r.connect_failures for r in fleet.rigs)
                               >= failures + 5, 3, "redials refused")
        await pool.resume()
        assert pool.port == port
        await fleet.wait_until(lambda: fleet.authorized == 5, 5, "reconnected")
        accepted = pool.accepted
        await fleet.wait_until(lambda: pool.accepted >= accepted + 5, 5, "mining again")


async def test_garbage_delay_rejects_and_pause(make_pool, make_fleet):
    async with asyncio.timeout(10):
        pool = await make_pool("p1")
        fleet = await make_fleet(pool, 4)
        pool.send_garbage()
        await fleet.wait_until(lambda: all(r.bad_lines == 1 for r in fleet.rigs), 3, "garbage")
        pool.send_message("hello")
        await fleet.wait_until(lambda: all(r.shown_messages == ["hello"] for r in fleet.rigs), 3,
                               "show_message")
        pool.set_reject_ratio(1.0)
        await fleet.wait_until(lambda: fleet.rejected[20] >= 4, 5, "sim rejects")
        assert all(s.reason == "rejected_by_sim" for s in pool.shares if not s.valid)
        pool.set_reject_ratio(0.0)
        pool.set_answer_delay(0.2)
        await fleet.drain(5)
        fleet.latencies.clear()
        fleet.resume_mining()
        await fleet.wait_until(lambda: len(fleet.latencies) >= 4, 5, "delayed answers")
        assert min(fleet.latencies) >= 0.19
        fleet.pause_mining()
        await fleet.drain(5)
        submitted = fleet.submitted
        # each rig's miner comes round to its next share, sees the pause and parks: from then
        # on it cannot submit; none may have submitted on the way
        await fleet.wait_until(lambda: fleet.idle == fleet.count, 5, "every rig's miner parked")
        assert fleet.submitted == submitted
        assert fleet.disconnects == 0


async def test_faults_are_safe_in_any_state():
    async with asyncio.timeout(5):
        pool = SimPool(SimPoolConfig(name="idle"))
        for fault in (pool.close_all, pool.reset_all, pool.stall, pool.unstall,
                      pool.send_garbage, pool.send_set_extranonce, pool.send_reconnect):
            fault()
        await pool.refuse()
        await pool.resume()
        await pool.stop()
        await pool.start()
        await pool.refuse()
        await pool.refuse()
        await pool.resume()
        await pool.resume()
        client = await RawClient.connect("127.0.0.1", pool.port)
        assert (await client.call("mining.subscribe", []))["result"]
        client.close()
        await pool.stop()
        await pool.stop()
        with pytest.raises(OSError):
            await RawClient.connect("127.0.0.1", pool.port)


# --- CLI ------------------------------------------------------------------------------------------

async def test_cli_pool_serves_a_fleet_and_stops_on_sigterm(make_fleet):
    async with asyncio.timeout(10):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.sim", "pool", "--name", "cli", "--port", "0",
            "--job-interval", "5", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, cwd=str(REPO_ROOT))
        try:
            assert proc.stdout is not None
            first = (await proc.stdout.readline()).decode()
            port = int(first.rsplit(":", 1)[1])
            stub = SimPool(SimPoolConfig(name="stub"))
            stub.port = port  # make_fleet only needs the port
            fleet = await make_fleet(stub, 2)
            await fleet.wait_until(lambda: fleet.accepted >= 2, 5, "accepted by the CLI pool")
            status = (await proc.stdout.readline()).decode()
            assert "conns=" in status and "accepted=" in status
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def test_difficulty_default_is_cheap():
    """At the default difficulty a share needs ~4096 hashes on average."""
    target = work.difficulty_to_target(SimPoolConfig(name="x").difficulty)
    assert 3000 < (1 << 256) / target < 5000


async def _uvloop_scenario() -> None:
    """Faults that touch transports (RST via SO_LINGER, refuse, set_extranonce) on uvloop."""
    async with asyncio.timeout(10):
        pool = SimPool(SimPoolConfig(name="uv", seed=7))
        await pool.start()
        fleet = RigFleet("127.0.0.1", pool.port, 5, share_interval=0.1, seed=8,
                         extranonce_subscribe=True, reconnect_delay=0.05)
        try:
            await fleet.start()
            await fleet.wait_until(lambda: fleet.accepted >= 10, 5, "mining on uvloop")
            pool.send_set_extranonce()
            pool.reset_all()
            await fleet.wait_until(lambda: fleet.disconnects == 5, 3, "resets seen")
            await pool.refuse()
            await pool.resume()
            await fleet.wait_until(lambda: fleet.authorized == 5, 5, "back on uvloop")
            accepted = pool.accepted
            await fleet.wait_until(lambda: pool.accepted >= accepted + 10, 5, "mining again")
            await fleet.drain(5)
            assert all(s.valid for s in pool.shares)
        finally:
            await fleet.stop()
            await pool.stop()


def test_on_uvloop():
    """The proxy and the demo run on uvloop, whose transports differ from asyncio's."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_uvloop_scenario())


def test_the_sim_templates_coinbase_pays_its_configured_value():
    from proxy.stratum.coinbase import coinbase_from_job

    pool = SimPool(SimPoolConfig(name="v", extranonce1_size=4, extranonce2_size=8,
                                 coinbase_value_sat=123_456_789))
    job = pool._make_job()
    assert coinbase_from_job(job.coinb1, job.coinb2, 12).value_sat == 123_456_789
    pool.config.coinbase_value_sat = 5
    job = pool._make_job()
    assert coinbase_from_job(job.coinb1, job.coinb2, 12).value_sat == 5
