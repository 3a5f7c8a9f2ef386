"""A cheap share load generator: many connections, pre-computed shares, a controlled rate.

Each connection subscribes and authorizes like a rig, takes the job it is given, and then
shares are computed ahead of time (real double-SHA256 against the job, at a tiny pool
difficulty where almost every nonce passes, so the proxy still validates each one fully).
During a phase, raw submit lines are written at the offered rate, spread round-robin over
the connections; answers are matched by id. Every share's nonce is its global sequence
number, which is how the pool side finds the share again (the proxy rewrites ids).
Clock: ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for every process on Linux).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from proxy.stratum import messages, work

from .common import take_lines

ID_BASE = 1000
ANSWER_RE = re.compile(rb'"id":(\d+),"result":(true|false|null)')
_sha256 = hashlib.sha256
_pack = struct.Struct("<I").pack


def header_midstate(job: messages.Notify, ext1: bytes, e2: bytes) -> tuple[Any, bytes]:
    """(SHA-256 state after the header's first 64 bytes, the 12 bytes before the nonce): a
    nonce is then tried with ``state.copy()``, ``update(tail + nonce)`` and a second SHA-256."""
    cb = work.dsha256(job.coinb1 + ext1 + e2 + job.coinb2)
    root = work.merkle_root(cb, job.merkle_branch)
    header = work.build_header(job.version, work.prevhash_to_header(job.prevhash), root,
                               job.ntime, job.nbits, 0)
    return _sha256(header[:64]), header[64:76]


async def open_connections(host: str, port: int, protocols: list[asyncio.Protocol],
                           concurrency: int = 200) -> None:
    """Connect every protocol to host:port, at most ``concurrency`` connects at once."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)

    async def one(protocol: asyncio.Protocol) -> None:
        async with sem:
            await loop.create_connection(lambda: protocol, host, port)

    await asyncio.gather(*(one(p) for p in protocols))


class ShareRig(asyncio.Protocol):
    def __init__(self, gen: LoadGen, index: int) -> None:
        self.gen = gen
        self.index = index
        self.worker = f"bench.{index:05d}"
        self.transport: Any = None
        self.buf = b""
        self.ext1 = b""
        self.e2_size = 0
        self.difficulty: float | None = None
        self.job: messages.Notify | None = None
        self.authorized = False
        self.ready = False
        self.closed = False
        self.midstates: list[tuple[bytes, Any, bytes]] = []  # (e2, sha256 midstate, tail)
        self.target = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(messages.request(1, "mining.subscribe", ["benchrig/1.0"])
                        + messages.request(2, "mining.authorize", [self.worker, "x"]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.gen.closing:
            self.gen.disconnects += 1

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        chunk, self.buf = take_lines(self.buf, data)
        if not chunk:
            return
        if not self.ready:
            for line in chunk.split(b"\n"):
                if line.strip():
                    self._handshake(messages.decode(line))
            return
        gen = self.gen
        if gen.recv_t is None:
            # throughput: count only
            gen.answered += chunk.count(b'"result":')
            gen.accepted += chunk.count(b'"result":true')
            return
        recv_t, base = gen.recv_t, gen.phase_base
        size = len(recv_t)
        for m in ANSWER_RE.finditer(chunk):
            gen.answered += 1
            if m.group(2) == b"true":
                gen.accepted += 1
            idx = int(m.group(1)) - base
            if 0 <= idx < size:
                recv_t[idx] = t

    def _handshake(self, msg: messages.Message) -> None:
        if msg.method is None:
            if msg.id == 1 and msg.result is not None:
                sub = messages.parse_subscribe_result(msg.result)
                self.ext1, self.e2_size = sub.extranonce1, sub.extranonce2_size
            elif msg.id == 2:
                self.authorized = msg.result is True
        elif msg.method == "mining.set_difficulty":
            self.difficulty = messages.parse_difficulty(msg.params)
        elif msg.method == "mining.notify":
            self.job = messages.parse_notify(msg.params)
        if self.job is not None and self.authorized and self.e2_size and self.difficulty:
            self._prepare()
            self.ready = True
            self.gen.ready += 1

    def _prepare(self) -> None:
        job = self.job
        assert job is not None and self.difficulty is not None
        self.target = work.difficulty_to_target(self.difficulty)
        self.midstates = []
        for variant in range(2):  # a second extranonce2 for the rare nonce that misses
            e2 = ((self.index << 8) | variant).to_bytes(8, "big")[-self.e2_size:]
            self.midstates.append((e2, *header_midstate(job, self.ext1, e2)))
        self.prefix = (b'"method":"mining.submit","params":["' + self.worker.encode() + b'","'
                       + job.job_id.encode() + b'","')
        self.ntime_hex = f"{job.ntime:08x}".encode()

    def share_line(self, seq: int) -> bytes | None:
        """The submit line for share ``seq`` (nonce = seq), or None if no variant passes."""
        nonce = _pack(seq)
        for e2, mid, tail in self.midstates:
            h = mid.copy()
            h.update(tail + nonce)
            if int.from_bytes(_sha256(h.digest()).digest(), "little") <= self.target:
                return (b'{"id":%d,' % (ID_BASE + seq) + self.prefix + e2.hex().encode()
                        + b'","' + self.ntime_hex + b'","%08x"]}\n' % seq)
        return None


@dataclass
class PhaseResult:
    rate: float
    duration: float
    sent: int
    answered: int
    accepted: int
    send_elapsed: float
    send_t: array = field(repr=False)
    recv_t: array | None = field(repr=False)
    base_seq: int = 0
    skipped: int = 0


class LoadGen:
    def __init__(self, host: str, port: int, count: int) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.rigs: list[ShareRig] = []
        self.ready = 0
        self.disconnects = 0
        self.closing = False
        self.next_seq = 1
        self.answered = 0
        self.accepted = 0
        self.recv_t: array | None = None
        self.phase_base = 0
        self.sent_in_phase = 0

    async def connect(self, timeout: float = 30.0, concurrency: int = 200) -> None:
        self.rigs = [ShareRig(self, i) for i in range(self.count)]
        async with asyncio.timeout(timeout):
            await open_connections(self.host, self.port, self.rigs, concurrency)
            while self.ready < self.count:
                await asyncio.sleep(0.01)

    def close(self) -> None:
        self.closing = True
        for rig in self.rigs:
            if rig.transport is not None:
                rig.transport.abort()

    def prepare(self, total: int) -> tuple[list[tuple[int, bytes]], int]:
        """Pre-compute ``total`` shares as (seq, line); share seq goes to rig seq % n."""
        rigs = self.rigs
        n = len(rigs)
        plan: list[tuple[int, bytes]] = []
        skipped = 0
        seq = self.next_seq
        while len(plan) < total:
            rig = rigs[seq % n]
            line = rig.share_line(seq)
            if line is None:
                skipped += 1
            else:
                plan.append((seq, line))
            seq += 1
        self.next_seq = seq
        return plan, skipped

    async def run_phase(self, rate: float, duration: float, *, record: bool = True,
                        drain_timeout: float = 3.0) -> PhaseResult:
        """Offer ``rate`` shares/s for ``duration`` s; wait up to drain_timeout for answers."""
        total = max(1, int(rate * duration))
        plan, skipped = self.prepare(total)
        base_seq = plan[0][0]
        span = plan[-1][0] - base_seq + 1
        send_t = array("q", bytes(8 * span))
        self.recv_t = array("q", bytes(8 * span)) if record else None
        self.phase_base = ID_BASE + base_seq
        self.answered = self.accepted = self.sent_in_phase = 0
        rigs = self.rigs
        n = len(rigs)
        start = time.monotonic_ns()
        interval = 1e9 / rate
        i = 0
        mono = time.monotonic_ns
        while i < total:
            now = mono()
            due = min(total, int((now - start) / interval) + 1)
            if due > i:
                by_rig: dict[int, list[bytes]] = {}
                seqs: dict[int, list[int]] = {}
                for seq, line in plan[i:due]:
                    r = seq % n
                    lst = by_rig.get(r)
                    if lst is None:
                        by_rig[r] = [line]
                        seqs[r] = [seq]
                    else:
                        lst.append(line)
                        seqs[r].append(seq)
                for r, lines in by_rig.items():
                    t = mono()
                    rigs[r].transport.write(b"".join(lines) if len(lines) > 1 else lines[0])
                    for seq in seqs[r]:
                        send_t[seq - base_seq] = t
                i = due
                self.sent_in_phase = i
            await asyncio.sleep(0.001)  # uvloop timers have 1 ms resolution
        send_elapsed = (mono() - start) / 1e9
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.answered < total and loop.time() < deadline:
            await asyncio.sleep(0.005)
        result = PhaseResult(rate, duration, total, self.answered, self.accepted, send_elapsed,
                             send_t, self.recv_t, base_seq, skipped)
        self.recv_t = None
        return result


def latencies(result: PhaseResult, skip_before_ns: int = 0) -> list[int]:
    """Rig-side submit->answer latencies (ns) of the shares sent after ``skip_before_ns``."""
    out = []
    recv = result.recv_t
    assert recv is not None
    for s, r in zip(result.send_t, recv):
        if s and r and s >= skip_before_ns:
            out.append(r - s)
    return out


def pool_latencies(result: PhaseResult, nonces: list[int], times: list[int],
                   skip_before_ns: int = 0) -> list[int]:
    """Pool-side latencies: pool receive time - rig send time, matched by nonce (= seq)."""
    out = []
    send = result.send_t
    base = result.base_seq
    size = len(send)
    for nonce, t in zip(nonces, times):
        idx = nonce - base
        if 0 <= idx < size:
            s = send[idx]
            if s and s >= skip_before_ns:
                out.append(t - s)
    return out
