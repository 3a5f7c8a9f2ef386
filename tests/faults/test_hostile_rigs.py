"""Hostile or broken rigs next to 50 well-behaved ones.

Each case: the proxy with a primary and a backup sim pool, 50 sim rigs mining, and a hostile
client (proxy/sim/client.py RawClient) repeating one kind of abuse for a whole measurement
window.  The hostile client gets a clear error or is closed; the 50 good rigs see no
disconnect, every submit answered, and their submit latency p99 during the attack stays
within a generous bound of the p99 measured just before it in the same test (a noisy shared
machine: this catches an attack that stalls the loop, not a millisecond).  The share ledger
then balances exactly, hostile submits included.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.sim import RawClient, wait_until
from proxy.stratum import errors, work
from tests.farm_fixture import Farm, check_accounting, quiesce

from .conftest import RIGS, record

WINDOW_ANSWERS = 120  # good-rig submit answers per measurement window (~0.5 s at 50 rigs)
P99_FACTOR, P99_SLACK_S = 5.0, 0.020
ATTACK_PACE_S = 0.01  # pause between attack rounds (a round is often well under 1 ms)


class Hostile:
    """One hostile connection: sends what a test says and tallies the answers to its submits."""

    def __init__(self, client: RawClient, worker: str) -> None:
        self.client = client
        self.worker = worker
        self.submit_ids: list[int] = []
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.notify: list[Any] = []

    @property
    def closed(self) -> bool:
        return self.client.closed.is_set()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self.client.closed.wait()

    async def setup(self) -> None:
        """subscribe + authorize, then wait for the difficulty and a job (a working rig)."""
        sub = await self.client.call("mining.subscribe", ["hostile/0.1"])
        self.extranonce1 = bytes.fromhex(sub["result"][1])
        self.extranonce2_size = sub["result"][2]
        auth = await self.client.call("mining.authorize", [self.worker, "x"])
        assert auth["result"] is True, auth
        self.difficulty = (await self.client.notification("mining.set_difficulty"))["params"][0]
        self.notify = (await self.client.notification("mining.notify"))["params"]

    def submit(self, params: list[Any]) -> int:
        msg_id = self.client.send("mining.submit", params)
        self.submit_ids.append(msg_id)
        return msg_id

    async def expect_error(self, msg_id: int, codes: set[int] | None = None) -> list[Any]:
        answer = await self.client.response(msg_id)
        assert answer["error"] is not None and answer["result"] in (None, False), answer
        code, text = answer["error"][0], answer["error"][1]
        assert isinstance(text, str) and text, answer  # a reason a person can read
        if codes is not None:
            assert code in codes, answer
        return answer["error"]

    async def call_error(self, method: str, params: Any, codes: set[int]) -> list[Any]:
        return await self.expect_error(self.client.send(method, params), codes)

    def meets(self, extranonce1: bytes, e2: bytes, nonce: int) -> bool:
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime = self.notify[:8]
        digest = work.share_hash(bytes.fromhex(coinb1), extranonce1, e2, bytes.fromhex(coinb2),
                                 [bytes.fromhex(b) for b in branch], int(version, 16),
                                 bytes.fromhex(prevhash), int(nbits, 16), int(ntime, 16), nonce)
        return work.hash_to_int(digest) <= work.difficulty_to_target(self.difficulty)

    def find_share(self, not_for: bytes | None = None) -> list[Any]:
        """A share that meets the difficulty for this connection's own extranonce1 (and, when
        ``not_for`` is given, does not for that extranonce1: at these difficulties one hash in
        a few hundred meets the target, so a copied share is now and then valid by chance)."""
        e2 = os.urandom(self.extranonce2_size)
        for nonce in range(1 << 20):
            if self.meets(self.extranonce1, e2, nonce) and not (
                    not_for is not None and self.meets(not_for, e2, nonce)):
                return [self.worker, self.notify[0], e2.hex(), self.notify[7], f"{nonce:08x}"]
        raise AssertionError("no share found")

    def answered_submits(self) -> int:
        ids = set(self.submit_ids)
        return sum(1 for m in self.client.received
                   if isinstance(m, dict) and m.get("id") in ids and "method" not in m)

    def tally(self) -> tuple[int, Counter]:
        """(accepted, rejected by code) over the answers received to this client's submits."""
        ids = set(self.submit_ids)
        accepted, rejected = 0, Counter()
        for m in self.client.received:
            if isinstance(m, dict) and m.get("id") in ids and "method" not in m:
                if m.get("result") is True and m.get("error") is None:
                    accepted += 1
                else:
                    rejected[m["error"][0]] += 1
        return accepted, rejected

    def close(self) -> None:
        self.client.close()


@dataclass
class Ctx:
    farm: Farm
    hostiles: list[Hostile] = field(default_factory=list)
    rounds: int = 0
    notes: Counter = field(default_factory=Counter)

    async def connect(self, setup: bool = False) -> Hostile:
        client = await RawClient.connect("127.0.0.1", self.farm.proxy.port)
        hostile = Hostile(client, f"hostile.{len(self.hostiles)}")
        self.hostiles.append(hostile)
        if setup:
            await hostile.setup()
        return hostile

    async def answered_then_closed(self, *hostiles: Hostile) -> None:
        """Close our own connections once every submit has its answer (so the tallies match
        the proxy's), and wait until the proxy has released them."""
        for h in hostiles:
            await wait_until(lambda h=h: h.closed or h.answered_submits() == len(h.submit_ids), 5,
                             what="answers to every hostile submit", poll=0.01)
            h.close()
        await wait_until(lambda: self.farm.rig_count() == RIGS, 5, what="hostile connections released",
                         poll=0.01)


# --- the abuse, one round each ------------------------------------------------------------

async def _over_long_line(ctx: Ctx) -> None:
    h = await ctx.connect()
    h.client.write(b'{"id":1,"method":"mining.subscribe","params":["' + b"x" * 20_000)
    await h.wait_closed()  # 16 KiB without a newline: closed, nothing buffered beyond it
    await ctx.answered_then_closed(h)


async def _request_flood(ctx: Ctx) -> None:
    h = await ctx.connect(setup=True)
    h.client.write(b'{"id":9,"method":"mining.suggest_difficulty","params":[1]}\n' * 2000)
    await h.wait_closed()
    limited = [m for m in h.client.received if isinstance(m, dict) and m.get("error")
               and "rate limited" in m["error"][1]]
    assert limited, "a flooding rig is told why before it is closed"
    answered = [m for m in h.client.received if isinstance(m, dict) and m.get("id") == 9]
    assert 0 < len(answered) < 2000
    await ctx.answered_then_closed(h)


async def _connection_limit(ctx: Ctx) -> None:
    """Limit is RIGS + 5 (total or per address): of 10 more connections, 5 are closed."""
    opened = [await ctx.connect() for _ in range(10)]
    await wait_until(lambda: sum(h.closed for h in opened) >= 5, 5,
                     what="connections over the limit closed")
    assert [h.closed for h in opened] == [False] * 5 + [True] * 5
    for h in opened[:5]:  # the ones within the limit are served
        answer = await h.client.call("client.get_version", [])
        assert answer["result"].startswith("stratum-proxy/")
    await ctx.answered_then_closed(*opened)


async def _slowloris_silent(ctx: Ctx) -> None:
    started = time.monotonic()
    idle = [await ctx.connect() for _ in range(10)]  # connect, then say nothing at all
    for h in idle:
        await h.wait_closed(5)
    assert time.monotonic() - started >= 0.9  # closed by the 1 s auth timeout, not before
    await ctx.answered_then_closed(*idle)


async def _slowloris_no_authorize(ctx: Ctx) -> None:
    h = await ctx.connect()
    sub = await h.client.call("mining.subscribe", ["slow/0.1"])
    assert sub["error"] is None
    started = time.monotonic()
    line = b'{"id":2,"method":"mining.authorize","params":["slow.rig","x"]}'
    for i in range(len(line) - 1):  # a byte every 50 ms, never the newline
        if h.closed:
            break
        h.client.write(line[i:i + 1])
        await asyncio.sleep(0.05)  # the attack's pace (scenario timing, not synchronisation)
    await h.wait_closed(5)
    assert time.monotonic() - started >= 0.8
    await ctx.answered_then_closed(h)


async def _invalid_json(ctx: Ctx) -> None:
    h = await ctx.connect(setup=True)
    h.client.write(b'{"id":6,"method":7,"params":[]}\n')  # JSON, not a request: error, kept
    assert (await h.client.response(6))["error"][0] == errors.PARSE_ERROR
    h.client.write(b'{"id":7,"method":"mining.submit","params":"nope"}\n')
    assert (await h.client.response(7))["error"][0] == errors.PARSE_ERROR
    assert not h.closed
    h.client.write(b'{"id": 8, "method": "mining.submit", "params": [}\n')  # no id to answer
    await h.wait_closed()
    raw = await ctx.connect()
    raw.client.write(b"\x00\x01\x02\xff binary junk\n")
    await raw.wait_closed()
    await ctx.answered_then_closed(h, raw)


async def _wrong_types(ctx: Ctx) -> None:
    h = await ctx.connect(setup=True)
    other, unauth, params = {errors.OTHER}, {errors.UNAUTHORIZED}, {errors.INVALID_PARAMS}
    await h.call_error("mining.authorize", [123, "x"], unauth)
    await h.call_error("mining.authorize", [], unauth)
    await h.call_error("mining.suggest_difficulty", ["abc"], params)
    await h.call_error("mining.suggest_difficulty", [True], params)
    await h.call_error("mining.configure", ["version-rolling"], params)
    await h.call_error("mining.configure", [["version-rolling"], {"version-rolling.mask": 5}], params)
    await h.call_error("mining.teleport", [], {errors.METHOD_NOT_FOUND})
    await h.expect_error(h.submit([1, 2, 3, 4, 5]), other)
    await h.expect_error(h.submit([h.worker, 123, "00000000", "00000000", "00000000"]), other)
    await h.expect_error(h.submit([h.worker, h.notify[0], None, {}, []]), other)
    await h.expect_error(h.submit([h.worker]), other)
    h.client.write(b'{"id":77,"method":"mining.subscribe","params":"not a list"}\n')
    assert (await h.client.response(77))["error"][0] == errors.PARSE_ERROR
    assert (await h.client.call("client.get_version", []))["result"]  # still served
    await ctx.answered_then_closed(h)


async def _huge_numbers(ctx: Ctx) -> None:
    h = await ctx.connect(setup=True)
    other = {errors.OTHER}
    big = 2**70
    assert (await h.client.call("client.get_version", [], ))["result"]
    h.client.write(b'{"id":%d,"method":"client.get_version","params":[]}\n' % big)
    assert (await h.client.response(big))["result"]  # a huge id is echoed, not truncated
    h.client.write(b'{"id":-%d,"method":"client.get_version","params":[]}\n' % big)
    assert (await h.client.response(-big))["result"]
    h.client.write(b'{"id":31,"method":"mining.suggest_difficulty","params":[1e400]}\n')
    assert (await h.client.response(31))["error"][0] == errors.PARSE_ERROR  # not a close
    h.client.write(b'{"id":32,"method":"mining.suggest_difficulty","params":[-1e308]}\n')
    assert (await h.client.response(32))["error"][0] == errors.INVALID_PARAMS
    await h.call_error("mining.configure", [["version-rolling"],
                                            {"version-rolling.mask": 2**100}], {errors.INVALID_PARAMS})
    job = h.notify[0]
    await h.expect_error(h.submit([h.worker, job, "00" * h.extranonce2_size, 2**80, "00000000"]), other)
    await h.expect_error(h.submit([h.worker, job, "00" * h.extranonce2_size, h.notify[7], 1e308]),
                         other)
    await h.expect_error(h.submit([h.worker, job, "00" * 4000, h.notify[7], "00000000"]), other)
    await h.expect_error(h.submit([h.worker, job, "00" * h.extranonce2_size, "1" * 64, "00000000"]),
                         other)
    assert not h.closed
    await ctx.answered_then_closed(h)


async def _bad_hex(ctx: Ctx) -> None:
    h = await ctx.connect(setup=True)
    other = {errors.OTHER}
    job, e2, ntime = h.notify[0], "00" * h.extranonce2_size, h.notify[7]
    for params in ([h.worker, job, "zz" * h.extranonce2_size, ntime, "00000000"],
                   [h.worker, job, "0" * (2 * h.extranonce2_size - 1), ntime, "00000000"],
                   [h.worker, job, e2, "gggggggg", "00000000"],
                   [h.worker, job, e2, ntime, "xyz12345"],
                   [h.worker, job, e2, ntime, "0000000"],
                   [h.worker, job, e2, ntime, "00000000", "nothex!!"]):
        text = (await h.expect_error(h.submit(params), other))[1]
        assert "hex" in text or "bytes" in text, text
    await h.call_error("mining.configure", [["version-rolling"], {"version-rolling.mask": "nothex!!"}],
                       {errors.INVALID_PARAMS})
    assert not h.closed
    await ctx.answered_then_closed(h)


async def _other_rigs_work(ctx: Ctx) -> None:
    owner = await ctx.connect(setup=True)
    thief = await ctx.connect(setup=True)
    share = owner.find_share(not_for=thief.extranonce1)
    assert (await owner.client.response(owner.submit(share)))["result"] is True
    # the same share from another connection hashes with that connection's extranonce1
    await thief.expect_error(thief.submit([thief.worker, *share[1:]]), {errors.LOW_DIFFICULTY})
    # another rig's worker name
    await thief.expect_error(thief.submit(["rig.0001", *share[1:]]), {errors.UNAUTHORIZED})
    # a job of another upstream connection (the backup's latest, which the proxy's standby
    # connection to it holds), and a job id never issued
    backup_job = ctx.farm.pools["backup"].current_job_id  # sent to every connection it serves
    assert backup_job is not None and ctx.farm.view("backup")["last_job_age_s"] is not None
    await thief.expect_error(thief.submit([thief.worker, backup_job, *share[2:]]),
                             {errors.JOB_NOT_FOUND})
    await thief.expect_error(thief.submit([thief.worker, "ffffffff", *share[2:]]),
                             {errors.JOB_NOT_FOUND})
    ctx.notes["stolen_shares_refused"] += 1
    await ctx.answered_then_closed(owner, thief)


async def _duplicate_flood(ctx: Ctx) -> None:
    h = await ctx.connect(setup=True)
    share = h.find_share()
    ids = [h.submit(share) for _ in range(300)]
    answers = [await h.client.response(i) for i in ids]
    assert answers[0]["result"] is True
    assert all(a["error"] and a["error"][0] == errors.DUPLICATE for a in answers[1:])
    primary = ctx.farm.pools["primary"]
    await wait_until(lambda: ctx.farm.proxy.in_flight_shares() == 0, 5, what="the pool's verdict")
    seen = [s for s in primary.shares if s.nonce == int(share[4], 16)
            and s.extranonce2.endswith(share[2]) and s.ntime == int(share[3], 16)]
    assert len(seen) == 1 and seen[0].valid  # forwarded once, and good (the pool saw it once)
    ctx.notes["duplicates_refused"] += len(answers) - 1
    await ctx.answered_then_closed(h)


@dataclass
class Case:
    attack: Callable[[Ctx], Awaitable[None]]
    proxy: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "over_long_line": Case(_over_long_line),
    "request_rate_flood": Case(_request_flood),
    "connections_per_address": Case(_connection_limit, {"max_rigs_per_address": RIGS + 5}),
    "connections_total": Case(_connection_limit, {"max_rigs": RIGS + 5}),
    "slowloris_never_subscribes": Case(_slowloris_silent, {"auth_timeout_s": 1.0}),
    "slowloris_never_authorizes": Case(_slowloris_no_authorize, {"auth_timeout_s": 1.0}),
    "invalid_json": Case(_invalid_json),
    "wrong_types": Case(_wrong_types),
    "huge_numbers": Case(_huge_numbers),
    "bad_hex": Case(_bad_hex),
    "other_rigs_job_and_extranonce": Case(_other_rigs_work),
    "duplicate_share_flood": Case(_duplicate_flood),
}


def _p99(samples: list[float]) -> float:
    data = sorted(samples)
    return data[min(len(data) - 1, int(0.99 * len(data)))]


async def _window(ctx: Ctx, attack: Callable[[Ctx], Awaitable[None]] | None) -> tuple[float, int]:
    """Good-rig submit latency p99 over the next WINDOW_ANSWERS answers (attack repeating)."""
    fleet = ctx.farm.fleet
    start, target = len(fleet.latencies), fleet.answered + WINDOW_ANSWERS
    deadline = time.monotonic() + 20
    rounds = 0
    if attack is None:
        await fleet.wait_until(lambda: fleet.answered >= target, 20, "baseline window")
    else:
        while rounds == 0 or fleet.answered < target:
            assert time.monotonic() < deadline, "attack window did not complete"
            await attack(ctx)
            rounds += 1
            # The attacker runs in this process too: unpaced, its own client work (thousands
            # of connections a second) would be what slows the loop, not the proxy.
            await asyncio.sleep(ATTACK_PACE_S)
    return _p99(list(fleet.latencies)[start:]), rounds


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_rig(fault_farm, name):
    case = CASES[name]
    started = time.monotonic()
    farm = fault_farm
    await farm.pool("primary", job_interval=30.0)  # no job churn: a found share stays fresh
    await farm.pool("backup", job_interval=30.0)
    await farm.start_proxy([{"name": n, "url": f"stratum+tcp://127.0.0.1:{p.port}"}
                            for n, p in farm.pools.items()], **case.proxy)
    fleet = await farm.start_fleet(RIGS)
    ctx = Ctx(farm)
    await fleet.wait_until(lambda: fleet.accepted >= RIGS, 10, "good rigs mining")
    # None of it slows the other rigs measurably: generous, for a shared and noisy machine,
    # and measured again once when over the bound (another process's burst or a GC pause
    # passes; an attack that really slows the loop fails both times).
    measured: list[tuple[float, float]] = []
    rounds = 0
    for _ in range(2):
        baseline, _ = await _window(ctx, None)
        attacked, n = await _window(ctx, case.attack)
        rounds += n
        measured.append((baseline, attacked))
        if attacked <= baseline * P99_FACTOR + P99_SLACK_S:
            break
    else:
        raise AssertionError(f"good rigs' p99 (baseline, attack) in seconds: {measured}")
    ctx.rounds = rounds
    assert fleet.connected == RIGS and fleet.disconnects == 0
    assert all(h.closed for h in ctx.hostiles)
    await quiesce(farm)
    accepted, rejected = 0, Counter()
    for h in ctx.hostiles:
        a, r = h.tally()
        accepted += a
        rejected.update(r)
    totals = check_accounting(farm, other_accepted=accepted, other_rejected=rejected,
                              exact_pools=("primary", "backup"))
    t = farm.totals()
    record("hostile_rigs", name, totals, time.monotonic() - started, attack_rounds=rounds,
           hostile_connections=len(ctx.hostiles), hostile_accepted=accepted,
           hostile_rejected={str(k): n for k, n in sorted(rejected.items())},
           good_p99_ms=[{"baseline": round(b * 1000, 3), "attack": round(a * 1000, 3)}
                        for b, a in measured],
           proxy_counters={k: t[k] for k in ("bad_lines", "rate_limited", "rigs_refused",
                                             "rigs_timed_out")})
