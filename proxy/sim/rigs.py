"""A fleet of simulated rigs that speak Stratum V1 like firmware does.

Each rig pipelines configure/subscribe/authorize, follows set_difficulty,
set_version_mask, set_extranonce and notify, and submits shares it really found by
hashing (at the low difficulties simulations use).  The fleet counts what a farm
operator cares about: disconnects, unanswered submits, rejects, and which pool's job
every rig is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
from collections import Counter, deque
from typing import Any, Callable

from ..stratum import messages, work
from ..stratum.framing import LineFramer, LineTooLong

log = logging.getLogger("proxy.sim.rigs")

SCAN_LIMIT = 200_000


class SimRig(asyncio.Protocol):
    def __init__(self, fleet: RigFleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.worker = f"{fleet.worker_prefix}.{fleet.worker_prefix}{index}"
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer(256 * 1024)
        self.next_id = 1
        self.connected = False
        self.subscribed = False
        self.authorized = False
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.target = work.difficulty_to_target(1.0)
        self.version_mask = 0
        self.job: messages.Notify | None = None
        self.job_coinb1 = b""
        self.notifies: list[tuple[float, str, bytes, bool]] = []
        self.pending: dict[int, float] = {}
        self.request_kinds: dict[int, str] = {}
        self.submitted = 0
        self.accepted = 0
        self.rejected: Counter = Counter()
        self.disconnects = 0
        self.reconnect_requests = 0
        self.set_extranonce_received = 0
        self.masks: list[int] = []
        self.stopping = False
        self._timer: asyncio.TimerHandle | None = None
        self._e2_counter = fleet.rng.randrange(1 << 30)
        self.messages_received: Counter = Counter()

    # ---- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connected = True
        fleet = self.fleet
        out = []
        if fleet.version_rolling:
            out.append(self._request("configure", "mining.configure",
                                     [["version-rolling"], {"version-rolling.mask": "1fffe000",
                                                            "version-rolling.min-bit-count": 2}]))
        out.append(self._request("subscribe", "mining.subscribe", ["sim-rig/1.0"]))
        if fleet.extranonce_subscribe:
            out.append(self._request("xsub", "mining.extranonce.subscribe", []))
        out.append(self._request("authorize", "mining.authorize", [self.worker, fleet.password]))
        if fleet.pipeline:
            transport.write(b"".join(out))
        else:
            for line in out:
                transport.write(line)

    def _request(self, kind: str, method: str, params: list[Any]) -> bytes:
        msg_id = self.next_id
        self.next_id += 1
        self.request_kinds[msg_id] = kind
        return messages.request(msg_id, method, params)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        self.subscribed = self.authorized = False
        if self._timer is not None:
            self._timer.cancel()
        if not self.stopping:
            self.disconnects += 1
            self.fleet._on_disconnect(self)

    # ---- incoming
    def data_received(self, data: bytes) -> None:
        try:
            lines = self.framer.feed(data)
        except LineTooLong:
            self.transport.abort() if self.transport else None
            return
        now = asyncio.get_running_loop().time()
        for line in lines:
            try:
                msg = messages.decode(line)
            except messages.BadMessage:
                self.messages_received["garbage"] += 1
                continue
            self.messages_received[msg.method or "response"] += 1
            if msg.method is None:
                self._on_response(msg, now)
            else:
                self._on_method(msg, now)
        self.fleet._changed()

    def _on_response(self, msg: messages.Message, now: float) -> None:
        msg_id = msg.id if isinstance(msg.id, int) else -1
        kind = self.request_kinds.pop(msg_id, "")
        if kind == "share":
            sent = self.pending.pop(msg_id, None)
            if sent is not None:
                self.fleet.latencies.append(now - sent)
            if msg.result is True:
                self.accepted += 1
            else:
                code = msg.error[0] if isinstance(msg.error, list) and msg.error else "other"
                self.rejected[code] += 1
        elif kind == "subscribe" and isinstance(msg.result, list):
            sub = messages.parse_subscribe_result(msg.result)
            self.extranonce1 = sub.extranonce1
            self.extranonce2_size = sub.extranonce2_size
            self.subscribed = True
        elif kind == "authorize":
            self.authorized = msg.result is True
            self._schedule()
        elif kind == "configure" and isinstance(msg.result, dict):
            if msg.result.get("version-rolling"):
                self.version_mask = int(msg.result.get("version-rolling.mask", "0"), 16)
                self.masks.append(self.version_mask)

    def _on_method(self, msg: messages.Message, now: float) -> None:
        method = msg.method
        params = msg.params or []
        if method == "mining.notify":
            notify = messages.parse_notify(params)
            if notify.clean_jobs or self.job is None:
                self.job = notify
            else:
                self.job = notify
            self.job_coinb1 = notify.coinb1
            self.notifies.append((now, notify.job_id, notify.coinb1, notify.clean_jobs))
            if len(self.notifies) > 64:
                del self.notifies[:32]
        elif method == "mining.set_difficulty":
            self.difficulty = messages.parse_difficulty(params)
            self.target = work.difficulty_to_target(self.difficulty)
        elif method == "mining.set_version_mask":
            self.version_mask = messages.parse_version_mask(params[0])
            self.masks.append(self.version_mask)
        elif method == "mining.set_extranonce":
            sub = messages.parse_set_extranonce(params)
            self.extranonce1 = sub.extranonce1
            self.extranonce2_size = sub.extranonce2_size
            self.set_extranonce_received += 1
        elif method == "client.reconnect":
            self.reconnect_requests += 1
            self.fleet._reconnect(self, params)
        elif method == "client.show_message":
            pass
        elif msg.id is not None and self.transport is not None:
            self.transport.write(messages.error_response(msg.id, -32601, "Method not found"))

    # ---- mining
    def _schedule(self) -> None:
        if self.stopping or not self.connected:
            return
        delay = self.fleet.rng.expovariate(1.0 / self.fleet.share_interval)
        self._timer = asyncio.get_running_loop().call_later(delay, self._mine_and_submit)

    def _mine_and_submit(self) -> None:
        self._timer = None
        if self.stopping or not self.connected:
            return
        if self.fleet.mining and self.authorized and self.job is not None and self.extranonce2_size:
            share = self.find_share()
            if share is not None:
                self.submit(*share)
        self._schedule()

    def find_share(self) -> tuple[str, bytes, int, int, int | None] | None:
        job = self.job
        assert job is not None
        self._e2_counter += 1
        e2 = (self._e2_counter % (256 ** min(self.extranonce2_size, 8))).to_bytes(
            self.extranonce2_size, "big")
        coinbase_hash = work.dsha256(job.coinb1 + self.extranonce1 + e2 + job.coinb2)
        root = work.merkle_root(coinbase_hash, job.merkle_branch)
        bits: int | None = None
        version = job.version
        if self.version_mask and self.fleet.rng.random() < 0.5:
            bits = self.fleet.rng.getrandbits(32) & self.version_mask
            version = work.rolled_version(job.version, bits, self.version_mask)
        head = (struct.pack("<I", version) + work.prevhash_to_header(job.prevhash) + root
                + struct.pack("<II", job.ntime, job.nbits))
        start = self.fleet.rng.getrandbits(32)
        target = self.target
        sha = hashlib.sha256
        for i in range(SCAN_LIMIT):
            nonce = (start + i) & 0xFFFFFFFF
            digest = sha(sha(head + struct.pack("<I", nonce)).digest()).digest()
            if int.from_bytes(digest, "little") <= target:
                return job.job_id, e2, job.ntime, nonce, bits
        return None

    def submit(self, job_id: str, e2: bytes, ntime: int, nonce: int, bits: int | None) -> None:
        if self.transport is None:
            return
        params: list[Any] = [self.worker, job_id, e2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
        if bits is not None:
            params.append(f"{bits:08x}")
        msg_id = self.next_id
        self.next_id += 1
        self.request_kinds[msg_id] = "share"
        self.pending[msg_id] = asyncio.get_running_loop().time()
        self.submitted += 1
        self.transport.write(messages.request(msg_id, "mining.submit", params))

    def on_job_with(self, tag: bytes) -> bool:
        return tag in self.job_coinb1


class RigFleet:
    def __init__(self, host: str, port: int, count: int, *, worker_prefix: str = "rig",
                 password: str = "x", share_interval: float = 1.0, version_rolling: bool = True,
                 extranonce_subscribe: bool = False, pipeline: bool = True,
                 connect_timeout: float = 10.0, seed: int | None = None,
                 concurrency: int = 256) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.worker_prefix = worker_prefix
        self.password = password
        self.share_interval = share_interval
        self.version_rolling = version_rolling
        self.extranonce_subscribe = extranonce_subscribe
        self.pipeline = pipeline
        self.connect_timeout = connect_timeout
        self.concurrency = concurrency
        self.rng = random.Random(seed)
        self.rigs: list[SimRig] = []
        self.latencies: deque[float] = deque(maxlen=20_000)
        self.mining = True
        self.unanswered_at_stop = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(index: int) -> None:
            async with sem:
                rig = SimRig(self, index)
                self.rigs.append(rig)
                await self._connect(rig, self.host, self.port)

        await asyncio.gather(*(one(i) for i in range(self.count)))

    async def _connect(self, rig: SimRig, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: rig, host, port), self.connect_timeout)

    def _reconnect(self, rig: SimRig, params: list[Any]) -> None:
        host = params[0] if params and isinstance(params[0], str) and params[0] else self.host
        port = int(params[1]) if len(params) > 1 else self.port
        if rig.transport is not None:
            rig.stopping = True
            rig.transport.close()

        async def redial() -> None:
            await asyncio.sleep(0)
            rig.stopping = False
            try:
                await self._connect(rig, host, port)
            except (OSError, TimeoutError):
                rig.disconnects += 1

        task = asyncio.get_running_loop().create_task(redial())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_disconnect(self, rig: SimRig) -> None:
        self._changed()

    def _changed(self) -> None:
        if not self._waiters:
            return
        for item in list(self._waiters):
            predicate, fut = item
            if fut.done():
                self._waiters.remove(item)
            elif predicate():
                fut.set_result(True)
                self._waiters.remove(item)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        """Await a condition re-checked on every message the fleet receives."""
        if predicate():
            return
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError(f"fleet: not within {timeout}s: {what or predicate}") from None

    def pause_mining(self) -> None:
        self.mining = False

    def resume_mining(self) -> None:
        self.mining = True

    async def stop(self) -> None:
        self.unanswered_at_stop = sum(len(r.pending) for r in self.rigs)
        for rig in self.rigs:
            rig.stopping = True
            if rig._timer is not None:
                rig._timer.cancel()
            if rig.transport is not None:
                rig.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop submitting and wait until every submit has its answer."""
        self.pause_mining()
        await self.wait_until(lambda: self.pending == 0, timeout, "all submits answered")

    # ---- aggregates
    @property
    def connected(self) -> int:
        return sum(1 for r in self.rigs if r.connected)

    @property
    def subscribed(self) -> int:
        return sum(1 for r in self.rigs if r.subscribed)

    @property
    def authorized(self) -> int:
        return sum(1 for r in self.rigs if r.authorized)

    @property
    def disconnects(self) -> int:
        return sum(r.disconnects for r in self.rigs)

    @property
    def submitted(self) -> int:
        return sum(r.submitted for r in self.rigs)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rigs)

    @property
    def rejected(self) -> Counter:
        total: Counter = Counter()
        for r in self.rigs:
            total.update(r.rejected)
        return total

    @property
    def pending(self) -> int:
        return sum(len(r.pending) for r in self.rigs)

    def unanswered(self, older_than: float = 5.0) -> int:
        now = asyncio.get_running_loop().time()
        return sum(1 for r in self.rigs for t in r.pending.values() if now - t > older_than)

    def rigs_with_job_containing(self, tag: bytes) -> int:
        return sum(1 for r in self.rigs if r.on_job_with(tag))

    def first_notify_after(self, t: float, tag: bytes) -> list[float | None]:
        out: list[float | None] = []
        for r in self.rigs:
            when = next((at for at, _, coinb1, _ in r.notifies if at >= t and tag in coinb1), None)
            out.append(when)
        return out

    def latency_quantile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]
