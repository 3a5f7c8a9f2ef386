"""A fleet of simulated rigs that speak Stratum V1 the way mining firmware does.

Each rig pipelines configure/subscribe/authorize, follows set_difficulty,
set_version_mask, set_extranonce, notify and client.reconnect, and submits only shares
it really found by double-SHA256 (at the low difficulties simulations use), so the pool
behind a proxy can validate every one of them.  The fleet counts what a farm operator
cares about: disconnects, unanswered submits, rejects by code, answer latency, and which
pool's job every rig is working on (by the tag a SimPool embeds in coinb1).

A fleet speaks as one firmware family: ``RigFleet(..., profile="cgminer")`` (the corpus is
``proxy.sim.firmware.PROFILES``).  What a profile's firmware would not put up with is
counted, per reason: ``refusals`` (the rig dropped the session, as that firmware does, and
redialled: also a disconnect) and ``violations`` (a promise the server broke, e.g. a
difficulty below the minimum-difficulty it accepted).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ._wait import wait_until
from .firmware import PROFILES, RigProfile, get_profile
from .simrig import SCAN_LIMIT, SimRig

log = logging.getLogger("proxy.sim.rigs")

__all__ = ["PROFILES", "RigFleet", "RigProfile", "SimRig"]


class RigFleet:
    """N simulated rigs against one host:port, with aggregate counters and waiting helpers."""

    def __init__(self, host: str, port: int, count: int, *, worker_prefix: str = "rig",
                 password: str = "x", share_interval: float = 1.0, version_rolling: bool = True,
                 extranonce_subscribe: bool = False, pipeline: bool = True,
                 connect_timeout: float = 5.0, seed: int | None = None,
                 auto_reconnect: bool = True, reconnect_delay: float = 0.5,
                 max_reconnect_delay: float = 5.0, scan_limit: int = SCAN_LIMIT,
                 concurrency: int = 64, latency_window: int = 20_000,
                 hashrate: float | None = None,
                 profile: str | RigProfile = "default",
                 source_addresses: list[str] | None = None) -> None:
        self.host = host
        # loopback source addresses the rigs connect from, in turn (127.0.0.x: a farm's many
        # rigs on one machine, told apart by address behind a balancer)
        self.source_addresses = list(source_addresses or [])
        self.port = port
        self.count = count
        self.worker_prefix = worker_prefix
        self.password = password
        self.share_interval = share_interval
        # H/s per rig: when set, a rig finds a share every difficulty * 2^32 / hashrate
        # seconds on average (a real rig's pace: a harder pool means fewer, bigger shares);
        # otherwise one per share_interval whatever the difficulty
        self.hashrate = hashrate
        # the firmware this fleet speaks as (proxy.sim.firmware.PROFILES); a named profile
        # fixes the handshake options, the default profile takes them from the arguments
        self.profile = p = get_profile(profile)
        self.version_rolling = version_rolling if p.version_rolling is None else p.version_rolling
        self.extranonce_subscribe = extranonce_subscribe if p.extranonce_subscribe is None \
            else p.extranonce_subscribe
        self.pipeline = pipeline if p.pipeline is None else p.pipeline
        self.connect_timeout = connect_timeout
        self.auto_reconnect = auto_reconnect
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.scan_limit = scan_limit
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.rigs: list[SimRig] = []
        self.latencies: deque[float] = deque(maxlen=latency_window)
        self.mining = True
        self.unanswered_at_stop = 0
        self._changed = asyncio.Event()
        self._stopped = False

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Dial every rig (at most ``concurrency`` handshakes at once); return after each
        rig's first attempt, connected or not (rigs with auto_reconnect keep trying)."""
        self._changed = asyncio.Event()
        sem = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        new = [SimRig(self, len(self.rigs) + i, self.host, self.port) for i in range(self.count)]
        self.rigs.extend(new)
        for rig in new:
            rig._tasks = [loop.create_task(rig.run(sem), name=f"{rig.worker}-conn"),
                          loop.create_task(rig.mine(), name=f"{rig.worker}-mine")]
        waits = [asyncio.ensure_future(r._first_attempt.wait()) for r in new]
        bound = self.connect_timeout * (1 + self.count / max(self.concurrency, 1)) + 1
        done, not_done = await asyncio.wait(waits, timeout=bound)
        for fut in not_done:
            fut.cancel()
        log.info("fleet: %d/%d rigs connected to %s:%d", self.connected, self.count,
                 self.host, self.port)

    async def stop(self) -> None:
        """Close every rig; pending submits are then counted in ``unanswered_at_stop``."""
        if self._stopped:
            return
        self._stopped = True
        self.unanswered_at_stop = self.pending
        tasks: list[asyncio.Task[None]] = []
        for rig in self.rigs:
            rig._stopping = True
            rig._wake.set()
            rig._closed.set()
            if rig.transport is not None:
                rig.transport.close()
            for task in rig._tasks:
                task.cancel()
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for rig in self.rigs:
            if rig.transport is not None:
                rig.transport.abort()

    async def __aenter__(self) -> RigFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _changed_now(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0,
                         what: str = "") -> None:
        """Await a condition; woken by every fleet event, polled every 20 ms besides."""
        await wait_until(predicate, timeout, what=f"fleet: {what}" if what else None,
                         event=self._changed)

    def pause_mining(self) -> None:
        """Stop finding and submitting shares (in-progress scans are dropped)."""
        self.mining = False

    def resume_mining(self) -> None:
        self.mining = True
        for rig in self.rigs:
            rig._wake.set()

    async def drain(self, timeout: float = 10.0) -> None:
        """Pause mining and wait until every submit already sent has its answer."""
        self.pause_mining()
        await self.wait_until(lambda: self.pending == 0, timeout, "all submits answered")

    def send_all(self, method: str, params: list[Any]) -> None:
        """Send an arbitrary request from every connected rig (e.g. suggest_difficulty)."""
        for rig in self.rigs:
            if rig.connected:
                rig._write(rig._request("other", method, params))

    # --- aggregates ---------------------------------------------------------------------------

    @property
    def connected(self) -> int:
        return sum(1 for r in self.rigs if r.connected)

    @property
    def subscribed(self) -> int:
        return sum(1 for r in self.rigs if r.subscribed)

    @property
    def idle(self) -> int:
        """Rigs whose miner is parked until it can mine (see ``pause_mining``)."""
        return sum(1 for r in self.rigs if r.idle)

    @property
    def authorized(self) -> int:
        return sum(1 for r in self.rigs if r.authorized)

    @property
    def disconnects(self) -> int:
        """Sessions that ended without the test asking: dropped by the peer, or given up by
        the rig's firmware rules (those are also in ``refusals``)."""
        return sum(r.disconnects for r in self.rigs)

    @property
    def refusals(self) -> Counter[str]:
        """Sessions the profile's firmware gave up, by reason (cgminer's 90 s silence ...)."""
        return self._sum_counters("refusals")

    @property
    def violations(self) -> Counter[str]:
        """Promises the server broke that the firmware noticed, by kind."""
        return self._sum_counters("violations")

    def _sum_counters(self, name: str) -> Counter[Any]:
        total: Counter[Any] = Counter()
        for r in self.rigs:
            total.update(getattr(r, name))
        return total

    @property
    def submitted(self) -> int:
        return sum(r.submitted for r in self.rigs)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rigs)

    @property
    def rejected(self) -> Counter[int | str]:
        return self._sum_counters("rejected")

    @property
    def answered(self) -> int:
        return sum(r.accepted + sum(r.rejected.values()) for r in self.rigs)

    @property
    def pending(self) -> int:
        """Submits sent on live connections and not answered yet."""
        return sum(len(r.pending) for r in self.rigs)

    @property
    def lost(self) -> int:
        """Submits that were pending when their connection dropped."""
        return sum(r.lost for r in self.rigs)

    @property
    def reconnect_requests(self) -> int:
        return sum(r.reconnect_requests for r in self.rigs)

    @property
    def set_extranonce_received(self) -> int:
        return sum(r.set_extranonce_received for r in self.rigs)

    @property
    def reject_messages(self) -> dict[int | str, str]:
        """Per reject code, a message the server gave with it (for test diagnostics)."""
        return {code: text for r in self.rigs for code, text in r.reject_messages.items()}

    def unanswered(self, older_than: float = 0.0) -> int:
        """Submits that never got an answer: lost on a dropped connection, plus pending ones
        sent more than ``older_than`` seconds ago (after stop(): all that were pending)."""
        if self._stopped:
            return self.unanswered_at_stop + self.lost
        now = time.monotonic()
        return self.lost + sum(1 for r in self.rigs for sent, _ in r.pending.values()
                               if now - sent >= older_than)

    def rigs_with_job_containing(self, tag: bytes) -> int:
        """Connected rigs whose latest notify's coinb1 contains ``tag``."""
        return sum(1 for r in self.rigs if r.on_job_with(tag))

    def first_notify_after(self, t: float, tag: bytes) -> list[float | None]:
        """Per rig, time.monotonic() of its first notify at/after ``t`` whose coinb1 holds ``tag``."""
        return [next((at for at, _, coinb1, _ in r.notifies if at >= t and tag in coinb1), None)
                for r in self.rigs]

    def latency_quantile(self, q: float) -> float | None:
        """Submit->answer latency quantile (0..1) over the recent window, seconds."""
        if not self.latencies:
            return None
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]

    def status(self) -> str:
        """One status line for the CLI."""
        rej = ",".join(f"{k}:{v}" for k, v in sorted(self.rejected.items(), key=str)) or "0"
        p50, p99 = self.latency_quantile(0.5), self.latency_quantile(0.99)
        lat = f" p50={p50 * 1000:.1f}ms p99={p99 * 1000:.1f}ms" if p50 is not None and p99 else ""
        quirks = "".join(f" {name}={dict(counts)}" for name, counts
                         in (("refusals", self.refusals), ("violations", self.violations))
                         if counts)
        return (f"connected={self.connected}/{self.count} authorized={self.authorized} "
                f"submitted={self.submitted} accepted={self.accepted} rejected={rej} "
                f"pending={self.pending} disconnects={self.disconnects}{lat}{quirks}")
