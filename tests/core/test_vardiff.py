"""Per-rig difficulty (issue 14) on the injected clock: 40 rigs of different hashrates on one
pool connection whose (vardiff) difficulty is set for their aggregate."""

from __future__ import annotations

import math
import random
import statistics

from proxy.core.vardiff import pow2_floor, target_for
from proxy.core.view import CoreView

from .harness import FakeRig, connect, make_core, make_notify

HASHES = 2**32
STEP = 0.1


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


class Miner:
    """A rig hashing at a true rate: shares at its target arrive as a Poisson process, and
    each is a real hash found by search, so whether it also meets the pool's target is
    decided by the hash, as in a real rig."""

    def __init__(self, core, clock, rng, index: int, hashrate: float) -> None:
        self.rig = FakeRig(core, clock, peer=f"10.0.{index // 200}.{index % 200}:4000")
        self.rig.setup(mask=None)
        self.core = core
        self.rng = rng
        self.hashrate = hashrate
        self.counter = 0
        self.pool_shares = 0  # shares this rig found that meet the pool's target
        self.read = 0
        self.difficulty: float | None = None
        self.job_id: str | None = None
        self.accepted = 0

    def _read(self) -> None:
        """What the proxy sent since the last look: difficulty, job, answers."""
        for msg in self.rig.received[self.read:]:
            method = msg.get("method")
            if method == "mining.set_difficulty":
                self.difficulty = msg["params"][0]
            elif method == "mining.notify":
                self.job_id = msg["params"][0]
            elif method is None and msg.get("result") is True:
                self.accepted += 1
        self.read = len(self.rig.received)

    def work(self, dt: float) -> None:
        rig = self.rig
        self._read()
        if self.difficulty is None or self.job_id is None:
            return
        difficulty = self.difficulty
        job_id = self.job_id
        job = self.core.jobs[job_id]
        for _ in range(_poisson(self.rng, self.hashrate * dt / (difficulty * HASHES))):
            target = target_for(difficulty)
            while True:
                self.counter += 1
                e2 = self.counter.to_bytes(4, "big")
                digest = job.header_hash(rig.session.prefix, e2, job.ntime, 0, job.version)
                value = int.from_bytes(digest, "little")
                if value <= target:
                    break
            self.pool_shares += value <= target_for(job.conn.difficulty)
            rig.request("mining.submit", ["farm.rig1", job_id, e2.hex(), f"{job.ntime:08x}", "00000000"])


def test_forty_rigs_get_their_own_difficulty_below_the_pools():
    interval = 1.0
    core, io, clock = make_core(rig_share_interval_s=interval)
    rng = random.Random(20261207)
    # rigs of four sizes; each would share every `interval` at its ideal difficulty
    ideal = [2.0**-29 * (1 + i % 4) for i in range(40)]
    pool_difficulty = pow2_floor(sum(ideal) * interval / 2)  # the pool's vardiff: a share per 2 s
    link = connect(core, io.dialed[0], clock)
    link.handshake(extranonce1="aaaaaaaa", e2_size=8, difficulty=pool_difficulty)
    connect(core, io.dialed[1], clock).handshake(extranonce1="bbbbbbbb", e2_size=8)
    miners = [Miner(core, clock, rng, i, d * HASHES / interval) for i, d in enumerate(ideal)]
    conn = link.conn
    answered: list[list[float]] = [[] for _ in miners]
    seen = [0] * len(miners)
    measured_from = clock.now + 60.0  # a minute to converge from the pool's difficulty
    end = clock.now + 360.0
    answered_upstream, jobs, next_job = 0, 1, clock.now + 30.0
    while clock.now < end:
        clock.advance(STEP)
        for i, m in enumerate(miners):
            m.work(STEP)
            m._read()
            n = m.accepted
            if n > seen[i] and clock.now >= measured_from:
                answered[i].extend([clock.now] * (n - seen[i]))
            seen[i] = n
            assert m.rig.session.difficulty <= conn.difficulty
        submits = link.requests("mining.submit")
        for req in submits[answered_upstream:]:  # the pool accepts what it is sent
            link.feed({"id": req["id"], "result": True, "error": None})
        answered_upstream = len(submits)
        if clock.now >= next_job:  # and sends a new job every 30 s, as pools do
            next_job += 30.0
            jobs += 1
            link.feed({"id": None, "method": "mining.notify", "params": make_notify(f"p{jobs}", clean=False)})
        core.tick(clock.now)
    rig_difficulties = [m.rig.session.difficulty for m in miners]
    assert max(rig_difficulties) <= conn.difficulty
    assert statistics.median(rig_difficulties) <= conn.difficulty / 4
    assert all(math.log2(d).is_integer() for d in rig_difficulties)  # powers of two
    for i, m in enumerate(miners):
        shares = len(answered[i])
        assert 0.5 * 300 / interval <= shares <= 2.0 * 300 / interval, (i, shares)
        assert sum(m.rig.session.rejected.values()) == 0
    # the pool receives exactly the shares that meet its difficulty, each once
    pool = core.pools["primary"]
    assert pool.counters.forwarded == sum(m.pool_shares for m in miners) > 0
    assert len(link.requests("mining.submit")) == pool.counters.forwarded
    # each rig's hashrate, as the API reports it, within 20% of its true rate
    view = CoreView(core)
    for m in miners:
        reported = view.rig(m.rig.session.rig_id, clock.now)["hashrate"]
        assert abs(reported / m.hashrate - 1) < 0.20, (m.hashrate, reported)


def test_a_quiet_rig_is_lowered_then_reported_stalled_and_resumed():
    core, io, clock = make_core(rig_share_interval_s=5.0)
    link = connect(core, io.dialed[0], clock)
    link.handshake(extranonce1="aaaaaaaa", e2_size=8, difficulty=2.0**-20)
    connect(core, io.dialed[1], clock).handshake(extranonce1="bbbbbbbb", e2_size=8)
    rng = random.Random(5)
    miner = Miner(core, clock, rng, 0, 2.0**-26 * HASHES / 5.0)  # 64x slower than the pool's pace
    view = CoreView(core)
    lowered = []
    for _ in range(int(60 / STEP)):  # no share yet: lowered 4x every 3 intervals
        clock.advance(STEP)
        miner.work(STEP)
        core.tick(clock.now)
        lowered.append(miner.rig.session.difficulty)
    assert lowered[0] == 2.0**-20 and min(lowered) < 2.0**-20
    assert all(math.log2(d).is_integer() for d in lowered)
    # it dies: after 6 intervals (at least 60 s) without a share it is reported, once
    for _ in range(int(70 / STEP)):
        clock.advance(STEP)
        core.tick(clock.now)
    status = view.status(clock.now)
    assert status["rigs_stalled"] == 1
    stalled = [e for e in core.events.recent() if e["kind"] == "rigs_stalled"]
    assert len(stalled) == 1 and stalled[0]["count"] == 1 and stalled[0]["workers"] == ["farm.rig1"]
    assert view.rig(miner.rig.session.rig_id, clock.now)["stalled"] is True
    # it comes back
    for _ in range(int(300 / STEP)):
        clock.advance(STEP)
        miner.work(STEP)
        core.tick(clock.now)
        miner._read()
        if miner.accepted and not view.status(clock.now)["rigs_stalled"]:
            break
    assert miner.accepted and view.status(clock.now)["rigs_stalled"] == 0
    assert [e["kind"] for e in core.events.recent()].count("rigs_resumed") == 1


def test_a_rig_that_never_shares_is_lowered_to_a_floor_then_left_alone():
    core, io, clock = make_core(rig_share_interval_s=5.0)
    link = connect(core, io.dialed[0], clock)
    link.handshake(extranonce1="aaaaaaaa", e2_size=8, difficulty=2.0**-20)
    connect(core, io.dialed[1], clock).handshake(extranonce1="bbbbbbbb", e2_size=8)
    rig = FakeRig(core, clock)
    rig.setup(mask=None)
    for _ in range(int(6 * 3600 / 1.0)):  # six hours of an idle rig, the core's timers running
        clock.advance(1.0)
        core.tick(clock.now)
        if int(clock.now) % 60 == 0:  # the pool keeps sending jobs, so it is not stale
            link.feed({"id": None, "method": "mining.notify",
                       "params": make_notify(f"p{int(clock.now)}", clean=False)})
    difficulties = [p[0] for p in rig.notifications("mining.set_difficulty")]
    assert difficulties[0] == 2.0**-20 and min(difficulties) >= 2.0**-44  # the floor: pool / 2^24
    # once stalled (no share for 60 s) it is no longer lowered and sent work for it
    assert len(difficulties) <= 6, difficulties
    assert CoreView(core).status(clock.now)["rigs_stalled"] == 1
