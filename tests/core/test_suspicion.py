"""Issue 20 on the injected clock: a silent pool left on suspicion, from its own latency and
job pace; a slow pool never makes the farm flap."""

from __future__ import annotations

import random

from proxy.core.health import PoolHealth
from proxy.core.upstream import ConnState

from .harness import FakePoolLink, FakeRig, connect, make_core, make_notify

STEP = 0.05


class Farm:
    """Two scripted pools answering shares after a latency the test chooses, rigs that
    submit once a second, and the core's clock advancing in small steps."""

    def __init__(self, n_rigs: int = 4, **proxy) -> None:
        self.core, self.io, self.clock = make_core(**proxy)
        self.primary = connect(self.core, self.io.dialed[0], self.clock)
        self.primary.handshake(extranonce1="aaaaaaaa", e2_size=8, notify=make_notify("p1", tag="01"))
        self.backup = connect(self.core, self.io.dialed[1], self.clock)
        self.backup.handshake(extranonce1="bbbbbbbb", e2_size=8, notify=make_notify("b1", tag="02"))
        self.rigs = []
        for i in range(n_rigs):
            rig = FakeRig(self.core, self.clock, peer=f"10.0.0.{i}:1")
            rig.setup(mask=None)
            self.rigs.append(rig)
        self.latency = {"primary": lambda: 0.001, "backup": lambda: 0.001}
        self.answering = {"primary": True, "backup": True}
        self._due: list[tuple[float, FakePoolLink, int]] = []
        self._answered: set[tuple[int, int]] = set()
        self._submitted = 0
        self.next_submit = self.clock.now
        self.job_every = 30.0  # each pool sends a new job this often (0: never)
        self.next_job = self.clock.now + self.job_every
        self._jobs = 1

    def link(self, name: str) -> FakePoolLink:
        return self.primary if name == "primary" else self.backup

    def _collect(self) -> None:
        for link in (self.primary, self.backup):
            for req in link.requests("mining.submit"):
                key = (link.conn.conn_id, req["id"])
                if key not in self._answered:
                    self._answered.add(key)
                    name = link.conn.pool.name
                    self._due.append((self.clock.now + self.latency[name](), link, req["id"]))

    def _submit_all(self) -> None:
        for rig in self.rigs:
            job_id = rig.notifications("mining.notify")[-1][0]
            job = self.core.jobs[job_id]
            self._submitted += 1
            e2 = self._submitted.to_bytes(4, "big")
            nonce = _nonce(job, rig.session.prefix, e2)
            rig.request("mining.submit", ["farm.rig1", job_id, e2.hex(), f"{job.ntime:08x}",
                                          f"{nonce:08x}"])

    def run(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(STEP)
            if self.job_every and self.clock.now >= self.next_job:
                self.next_job += self.job_every
                self._jobs += 1
                for link, tag in ((self.primary, "01"), (self.backup, "02")):
                    if link.conn.state is not ConnState.CLOSED:
                        link.feed({"id": None, "method": "mining.notify",
                                   "params": make_notify(f"{tag}-{self._jobs}", clean=False, tag=tag)})
            if self.clock.now >= self.next_submit:
                self.next_submit += 1.0
                self._submit_all()
            self._collect()
            ready = [d for d in self._due if d[0] <= self.clock.now]
            self._due = [d for d in self._due if d[0] > self.clock.now]
            for _, link, msg_id in ready:
                if link.conn.state is not ConnState.CLOSED and self.answering[link.conn.pool.name]:
                    link.feed({"id": msg_id, "result": True, "error": None})
                elif not self.answering[link.conn.pool.name]:
                    self._due.append((self.clock.now + STEP, link, msg_id))  # answered once it wakes
            self.core.tick(self.clock.now)

    def switches(self) -> list[dict]:
        return [e for e in self.core.events.recent() if e["kind"] == "pool_switch"]

    def health(self, name: str) -> PoolHealth:
        return self.core.pools[name].health.state


def _nonce(job, prefix: bytes, e2: bytes) -> int:
    for nonce in range(100_000):
        digest = job.header_hash(prefix, e2, job.ntime, nonce, job.version)
        if int.from_bytes(digest, "little") <= job.target:
            return nonce
    raise AssertionError("no nonce")


def test_a_silent_pool_is_suspect_within_a_second_and_its_late_answers_count():
    farm = Farm()
    farm.run(30)  # the primary's latency is learned: ~1 ms
    assert farm.core.active_pools() == ["primary"]
    assert farm.core.pools["primary"].suspect_after == 0.5  # 4 x p99 is below the 0.5 s floor
    farm.answering["primary"] = False
    silent_at = farm.clock.now
    while farm.core.active_pools() == ["primary"]:
        farm.run(STEP)
    assert farm.clock.now - silent_at <= 1.0 + STEP  # the last share sent waits 0.5 s at most
    assert farm.health("primary") is PoolHealth.SUSPECT
    assert farm.primary.conn.state is ConnState.READY  # its connection stays open
    for rig in farm.rigs:  # every rig is on the backup's job, none disconnected
        assert rig.notifications("mining.notify")[-1][2].endswith("bbbbbbbb0000")
        assert not rig.closed
    event = [e for e in farm.core.events.recent() if e["kind"] == "pool_health"][-1]
    assert event["state"] == "suspect" and "over its bound 0.50 s" in event["reason"]
    assert "p99" in event["reason"]
    # it answers after 2 s after all: slow, not dead; the late answers are counted accepted
    farm.run(1.0)
    accepted_before = farm.core.pools["primary"].counters.accepted
    farm.answering["primary"] = True
    farm.run(0.2)
    assert farm.health("primary") is PoolHealth.HEALTHY
    primary = farm.core.pools["primary"]
    assert primary.counters.accepted > accepted_before and primary.counters.timeouts == 0
    assert sum(primary.counters.lost.values()) == 0
    # the rigs come back after suspect_hold_s (5 s), not failback_hold_s (60 s)
    farm.run(4.5)
    assert farm.core.active_pools() == ["backup"]
    farm.run(1.0)
    assert farm.core.active_pools() == ["primary"]
    assert [(s["from_pools"], s["to_pools"]) for s in farm.switches()[-2:]] == [
        (["primary"], ["backup"]), (["backup"], ["primary"])]


def test_a_pool_still_silent_at_the_ceiling_is_down_and_its_shares_timed_out():
    farm = Farm()
    farm.run(30)
    farm.answering["primary"] = False
    farm.run(4.5)
    assert farm.health("primary") is PoolHealth.DOWN
    assert "silent: no answer for 4s" in farm.core.pools["primary"].health.reason
    assert farm.core.pools["primary"].counters.timeouts > 0


def test_steady_slowness_never_switches():
    farm = Farm()
    rng = random.Random(7)
    farm.latency["primary"] = lambda: 0.3 + rng.uniform(-0.05, 0.05)
    farm.run(300)
    assert farm.switches()[-1]["to_pools"] == ["primary"] and len(farm.switches()) == 1
    assert farm.health("primary") is PoolHealth.HEALTHY
    assert farm.core.pools["primary"].suspect_after > 1.2  # learned: 4 x p99 (~350 ms)


def test_one_two_second_hiccup_is_one_switch_and_one_return():
    farm = Farm()
    farm.run(30)
    farm.latency["primary"] = lambda: 2.0
    farm.run(1.0)  # the shares sent during this second take 2 s
    farm.latency["primary"] = lambda: 0.001
    farm.run(60)
    moves = [(s["from_pools"], s["to_pools"]) for s in farm.switches()[1:]]
    assert moves == [(["primary"], ["backup"]), (["backup"], ["primary"])]
    assert farm.health("primary") is PoolHealth.HEALTHY


def test_a_pool_suspected_again_and_again_is_degraded():
    farm = Farm(suspect_limit=3)
    farm.run(30)
    health = []
    for _ in range(3):
        # a hiccup a minute: by the next one the 60 s latency window has forgotten the last,
        # so each one is a new suspicion (within one, the bound learns the slow answers)
        farm.latency["primary"] = lambda: 1.5
        farm.run(1.0)
        farm.latency["primary"] = lambda: 0.001
        farm.run(2.0)
        health.append(farm.health("primary"))
        farm.run(67.0)
    # the first two were cleared (slow, not dead); the third makes it degraded
    assert health == [PoolHealth.HEALTHY, PoolHealth.HEALTHY, PoolHealth.DEGRADED]
    states = [e["state"] for e in farm.core.events.recent() if e["kind"] == "pool_health"
              and e["pool"] == "primary"]
    assert states[-6:] == ["suspect", "healthy", "suspect", "healthy", "degraded", "healthy"]
    degraded = [e for e in farm.core.events.recent() if e["kind"] == "pool_health"
                and e["state"] == "degraded"]
    assert len(degraded) == 1 and "suspected 3 times" in degraded[0]["reason"]


def test_a_fixed_silent_timeout_never_suspects():
    farm = Farm(silent_timeout_s=4.0)
    farm.run(30)
    farm.answering["primary"] = False
    farm.run(3.5)
    assert farm.health("primary") is PoolHealth.HEALTHY
    farm.run(1.0)
    assert farm.health("primary") is PoolHealth.DOWN


def test_no_new_job_for_three_times_its_pace_is_suspect_even_without_shares():
    farm = Farm(n_rigs=0)
    farm.job_every = 0
    for n in range(8):  # the primary sends a job every 10 s
        farm.run(10)
        farm.primary.feed({"id": None, "method": "mining.notify",
                           "params": make_notify(f"p{n + 2}", clean=False, tag="01")})
        farm.backup.feed({"id": None, "method": "mining.notify",
                          "params": make_notify(f"b{n + 2}", clean=False, tag="02")})
    assert farm.health("primary") is PoolHealth.HEALTHY
    farm.run(29)
    assert farm.health("primary") is PoolHealth.HEALTHY
    farm.run(2)
    assert farm.health("primary") is PoolHealth.SUSPECT
    assert "no new job" in farm.core.pools["primary"].health.reason
    farm.primary.feed({"id": None, "method": "mining.notify", "params": make_notify("p99", tag="01")})
    assert farm.health("primary") is PoolHealth.HEALTHY
