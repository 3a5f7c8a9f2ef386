"""A validating Stratum V1 pool with fault injection, for tests, benchmarks and the demo.

It is deliberately independent of ``proxy.core``/``proxy.net``: it rebuilds every submitted
share from its own jobs and the connection's extranonce1 with the wire maths proven on
mainnet blocks (``proxy.stratum.work``), so a proxy that mistranslates a job, an extranonce
or version bits gets rejected here exactly as a real pool would reject it.

Everything it does is counted (``accepted``, ``rejected``, ``shares``, ``connections`` ...) so
tests can await conditions instead of sleeping; per connection too (``conn_stats``: the
difficulty in force, what was credited, the methods in the order the client sent them).

With ``vardiff=True`` each connection gets its own difficulty, retargeted at a share rate the
way ckpool does it (see ``proxy.sim.vardiff``): a proxy carrying many rigs on one connection
sees that connection's difficulty rise, as it would on a real pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..stratum import messages
from ..stratum.framing import LineFramer
from ._wait import wait_until
from .pool_conn import (
    CONN_STATS_KEPT,
    JOBS_KEPT,
    NTIME_BASE,
    SimConnStats,
    SimJob,
    SimPoolConnection,
    SimShare,
)
from .vardiff import VardiffConfig

log = logging.getLogger("proxy.sim.pool")

__all__ = ["SimConnStats", "SimPool", "SimPoolConfig", "SimShare"]

@dataclass
class SimPoolConfig:
    """How the simulated pool behaves; every field can be changed per test."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: ephemeral, read SimPool.port after start()
    extranonce1_size: int = 4
    extranonce2_size: int = 8
    difficulty: float = 2.0 ** -20  # ~4096 hashes per share: cheap for Python rigs
    job_interval: float = 30.0
    answer_delay: float = 0.0
    reject_ratio: float = 0.0
    version_mask: int = 0x1FFFE000
    tag: str | None = None  # embedded in every coinb1; defaults to name
    # the template: what the coinbase pays (one payout output; set_template changes it) and
    # the network target as a job's nbits (shares are judged by the pool difficulty, never by
    # it); the defaults make a mainnet-like hashprice, ~0.00073 BTC per PH/s per day
    coinbase_value_sat: int = 312_500_000
    nbits: int = 0x17034219
    seed: int | None = None
    max_share_records: int = 100_000  # bounds memory of ``shares`` in long demos
    # per-connection vardiff, off by default (then every connection has ``difficulty``);
    # ``difficulty`` is where each connection starts.  Times scale with the target interval
    # unless given (ckpool: 3.33 s per share, retarget after 72 shares or 240 s)
    vardiff: bool = False
    vardiff_target_interval_s: float = 10 / 3
    vardiff_min: float = 2.0 ** -30
    vardiff_max: float = 2.0 ** -16
    vardiff_retarget_shares: int = 72
    vardiff_retarget_s: float | None = None
    vardiff_window_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.extranonce1_size <= 8:
            raise ValueError("extranonce1_size must be 0..8")
        # real pools give 3..8 (NiceHash 3, most 4, ckpool 8); 1..16 lets tests probe the
        # limits of firmware (cgminer accepts 2..16, some Whatsminers nothing above 8)
        if not 1 <= self.extranonce2_size <= 16:
            raise ValueError("extranonce2_size must be 1..16")
        if not self.difficulty > 0:
            raise ValueError("difficulty must be positive")
        if self.vardiff:
            self.vardiff_config()  # validates the bounds
        if self.tag is None:
            self.tag = self.name

    def vardiff_config(self) -> VardiffConfig:
        return VardiffConfig(self.vardiff_target_interval_s, self.vardiff_min, self.vardiff_max,
                             self.vardiff_retarget_shares, self.vardiff_retarget_s,
                             self.vardiff_window_s)


class SimPool:
    """A Stratum V1 pool on loopback that validates every share and injects faults on demand."""

    def __init__(self, config: SimPoolConfig) -> None:
        self.config = config
        self.name = config.name
        self.tag: bytes = (config.tag or config.name).encode("ascii")
        self.port: int = config.port
        self.difficulty: float = config.difficulty
        self.vardiff_config = config.vardiff_config()
        self.answer_delay: float = config.answer_delay
        self.reject_ratio: float = config.reject_ratio
        self.stalled = False
        # answer-level and byte-level faults (see the fault methods below)
        self.half_opened = False
        self.drip_interval = 0.0
        self.drip_chunk = 1
        self.wrong_id_mode: str | None = None
        self.duplicating_answers = False
        self.answering_unknown_ids = False
        self.mask_before_configure_answer = False
        self._unknown_id = 0
        self._rng = random.Random(config.seed)
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[int, SimPoolConnection] = {}
        self._conn_counter = 0
        self._ext1_counter = self._rng.getrandbits(32)
        self._job_counter = self._rng.getrandbits(16) << 16
        self._jobs: OrderedDict[str, SimJob] = OrderedDict()
        self._fixed: tuple[list[Any], bytes, int] | None = None
        self._seen: set[tuple] = set()
        self._seen_order: deque[tuple] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._changed = asyncio.Event()
        self._started = False
        # --- observable accounting ---
        self.accepted = 0
        self.rejected: Counter[int] = Counter()
        self.shares: deque[SimShare] = deque(maxlen=config.max_share_records)
        # per connection (open ones, and the last CONN_STATS_KEPT closed ones)
        self.conn_stats: OrderedDict[int, SimConnStats] = OrderedDict()
        self.submits = 0
        self.connections = 0
        self.total_connections = 0
        self.authorized_workers: set[str] = set()
        self.jobs_sent = 0  # jobs created and broadcast (including the first)
        self.bad_lines = 0
        self.dripped_bytes = 0
        self.wrong_id_answers = 0
        self.duplicate_answers_sent = 0
        self.unknown_answers_sent = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind (ephemeral port when config.port is 0), create the first job, start the clock."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._changed = asyncio.Event()
        self._started = True
        if not self._jobs:
            self._add_job(self._make_job())
        await self._listen()
        self._schedule_jobs()
        log.info("%s: listening on %s:%d", self.name, self.config.host, self.port)

    async def stop(self) -> None:
        """Stop listening, abort every connection, cancel timers. Safe to call twice."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.abort()
        if server is not None:
            try:
                async with asyncio.timeout(2.0):
                    await server.wait_closed()
            except TimeoutError:
                log.warning("%s: server did not close within 2s", self.name)

    async def __aenter__(self) -> SimPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_conn, self.config.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def _make_conn(self) -> SimPoolConnection:
        self._conn_counter += 1
        return SimPoolConnection(self, self._conn_counter)

    # --- state changes from connections -----------------------------------------------------

    def _opened(self, conn: SimPoolConnection) -> None:
        self._conns[conn.conn_id] = conn
        self.connections += 1
        self.total_connections += 1
        self._notify_change()

    def _closed(self, conn: SimPoolConnection) -> None:
        if self._conns.pop(conn.conn_id, None) is not None:
            self.connections -= 1
        conn.stats.closed = True
        self._notify_change()

    def _new_stats(self, conn_id: int) -> SimConnStats:
        stats = SimConnStats(conn_id, self.difficulty, self.now())
        kept = self.conn_stats
        kept[conn_id] = stats
        if len(kept) > CONN_STATS_KEPT + len(self._conns):
            for old_id in [i for i, s in kept.items() if s.closed][:len(kept) // 10]:
                del kept[old_id]
        return stats

    def now(self) -> float:
        """The pool's clock: the event loop's (the vardiff window, difficulty history)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return self._t0

    def open_stats(self) -> list[SimConnStats]:
        """Per-connection figures of the connections open now, oldest first."""
        return [conn.stats for conn in self._conns.values()]

    def _record(self, share: SimShare) -> None:
        self.submits += 1
        self.shares.append(share)
        self._notify_change()

    def _remember(self, key: tuple) -> None:
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > 200_000:
            self._seen.discard(self._seen_order.popleft())

    def _notify_change(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0,
                         what: str | None = None) -> None:
        """Await a condition on this pool's counters (raises TimeoutError with ``what``)."""
        await wait_until(predicate, timeout, what=what, event=self._changed)

    # --- jobs -------------------------------------------------------------------------------

    @property
    def current_job(self) -> SimJob | None:
        return next(reversed(self._jobs.values())) if self._jobs else None

    @property
    def current_job_id(self) -> str | None:
        job = self.current_job
        return job.job_id if job else None

    def _next_extranonce1(self) -> bytes:
        size = self.config.extranonce1_size
        if size == 0:
            return b""
        self._ext1_counter += 1
        return (self._ext1_counter % (1 << (8 * size))).to_bytes(size, "big")

    def _ntime(self) -> int:
        return NTIME_BASE + int(self.now() - self._t0)

    def _make_job(self) -> SimJob:
        """A synthetic but well-formed job: BIP34-style height push, the tag, P2WPKH payout."""
        rng = self._rng
        self._job_counter += 1
        job_id = f"{self._job_counter:x}"
        height = 800_000 + (self._job_counter & 0xFFFF)
        tag = self.tag[:60]
        ext_total = self.config.extranonce1_size + self.config.extranonce2_size
        script_prefix = b"\x03" + height.to_bytes(3, "little") + bytes([len(tag)]) + tag
        script_len = len(script_prefix) + ext_total
        coinb1 = (
            struct.pack("<I", 1) + b"\x01" + b"\x00" * 32 + b"\xff\xff\xff\xff"
            + bytes([script_len]) + script_prefix
        )
        coinb2 = (
            b"\xff\xff\xff\xff" + b"\x01" + struct.pack("<Q", self.config.coinbase_value_sat)
            + b"\x16\x00\x14" + rng.randbytes(20) + b"\x00\x00\x00\x00"
        )
        branch = [rng.randbytes(32) for _ in range(rng.randint(1, 4))]
        prevhash = rng.randbytes(28) + b"\x00\x00\x00\x00"  # the header's zeros, word-swapped
        version, nbits, ntime = 0x20000000, self.config.nbits, self._ntime()
        params = [job_id, prevhash.hex(), coinb1.hex(), coinb2.hex(), [b.hex() for b in branch],
                  f"{version:08x}", f"{nbits:08x}", f"{ntime:08x}"]
        return SimJob(job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, params)

    def _add_job(self, job: SimJob) -> None:
        self._jobs[job.job_id] = job
        self._jobs.move_to_end(job.job_id)
        while len(self._jobs) > JOBS_KEPT:
            self._jobs.popitem(last=False)
        self.jobs_sent += 1

    def _broadcast(self, job: SimJob, clean: bool) -> None:
        line = job.notify_line(clean)
        for conn in list(self._conns.values()):
            if conn.work_sent:
                conn.send_job(job, clean, line)
        self._notify_change()

    def broadcast_job(self, clean: bool = True) -> str:
        """Make a new synthetic job and send it to every client now; return its job id."""
        job = self._make_job()
        self._add_job(job)
        if not self.stalled:
            self._broadcast(job, clean)
        return job.job_id

    def set_template(self, *, coinbase_value_sat: int | None = None, nbits: int | None = None,
                     clean: bool = True) -> str:
        """Change what the template pays (and the network target) and send a new job now, as a
        pool does when fees arrive or the difficulty adjusts; returns the new job id."""
        if coinbase_value_sat is not None:
            self.config.coinbase_value_sat = coinbase_value_sat
        if nbits is not None:
            self.config.nbits = nbits
        return self.broadcast_job(clean=clean)

    def _schedule_jobs(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._started or self._fixed is not None or self.config.job_interval <= 0:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.config.job_interval, self._job_tick)

    def _job_tick(self) -> None:
        self._timer = None
        if not self.stalled:  # a hung pool sends nothing
            self.broadcast_job(clean=True)
        self._schedule_jobs()

    def set_fixed_job(self, notify_params: list[Any], extranonce1: bytes,
                      extranonce2_size: int) -> None:
        """Replay a real job: every new connection gets this extranonce1/size and this notify.

        The periodic job timer is suspended while a fixed job is set (so a replay is not
        made stale mid-test); ``broadcast_job`` still works.
        """
        n = messages.parse_notify(notify_params)
        job = SimJob(n.job_id, n.prevhash, n.coinb1, n.coinb2, list(n.merkle_branch), n.version,
                   n.nbits, n.ntime, list(messages.notify_params(n))[:8])
        self._fixed = (list(notify_params), bytes(extranonce1), int(extranonce2_size))
        self._add_job(job)
        if self._started:
            self._schedule_jobs()
            self._broadcast(job, True)

    def clear_fixed_job(self) -> None:
        """Back to synthetic jobs and per-connection extranonce1 for new connections."""
        self._fixed = None
        if self._started:
            self._schedule_jobs()

    def set_difficulty(self, difficulty: float) -> None:
        """Send mining.set_difficulty to everyone; it applies to jobs sent afterwards.

        On a vardiff pool this is the operator overriding every connection (bounds and
        client floors included) until vardiff moves it again; new connections start here.
        """
        self.difficulty = float(difficulty)
        line = messages.notification("mining.set_difficulty", [self.difficulty])
        now = self.now()
        for conn in list(self._conns.values()):
            if conn.work_sent:
                conn.difficulty = self.difficulty
                if conn.vardiff is not None:
                    conn.vardiff.force(self.difficulty, now)
                conn.send_difficulty(line)

    # --- faults -----------------------------------------------------------------------------

    def close_all(self) -> None:
        """Gracefully close every client connection (FIN after pending writes)."""
        for conn in list(self._conns.values()):
            conn.close()

    def reset_all(self) -> None:
        """Reset every client connection (TCP RST via SO_LINGER 0)."""
        for conn in list(self._conns.values()):
            conn.reset()

    async def refuse(self) -> None:
        """Stop listening and reset existing connections: redials get ECONNREFUSED."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.reset_all()

    async def resume(self) -> None:
        """Listen again on the same port after refuse()."""
        if self._server is None and self._started:
            await self._listen()

    def stall(self) -> None:
        """Go silent: keep sockets open, discard input, answer nothing, send no jobs."""
        self.stalled = True

    def unstall(self) -> None:
        """Answer again; input received while stalled stays discarded."""
        if self.stalled:
            self.stalled = False
            for conn in self._conns.values():
                conn.framer = LineFramer()

    def send_garbage(self, line: bytes = b"this is not json {{{") -> None:
        """Write a non-JSON line to every client."""
        for conn in list(self._conns.values()):
            conn.write(line.rstrip(b"\n") + b"\n")

    def send_over_long_line(self, size: int = 64 * 1024) -> None:
        """Write a ``size``-byte line (newline-terminated) to every client: a framer's cap test."""
        line = b'{"id":null,"method":"client.show_message","params":["' \
            + b"x" * max(0, size - 60) + b'"]}'
        for conn in list(self._conns.values()):
            conn.write(line + b"\n")

    def partial_line_then_close(self) -> int:
        """Write the first half of a fresh notify line to every client, then close (FIN).

        The client holds an unterminated fragment when the connection ends: it must drop it,
        not act on it.  The job is not kept, so nothing can be submitted against it.  Returns
        the number of connections cut.
        """
        line = self._make_job().notify_line(True)
        cut = 0
        for conn in list(self._conns.values()):
            if conn.transport is None or conn.transport.is_closing():
                continue
            conn.write(line[: len(line) // 2])
            conn.flush_drip()
            conn.close()
            cut += 1
        return cut

    def half_open(self) -> None:
        """Behave like a peer that vanished without FIN or RST: sockets stay open, nothing is
        read (the kernel buffers fill up), nothing is written; new connections are accepted by
        the kernel and then ignored the same way (a handshake that never completes)."""
        self.half_opened = True
        for conn in self._conns.values():
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.pause_reading()

    def end_half_open(self) -> None:
        """Read and write again (what arrived meanwhile is processed)."""
        if self.half_opened:
            self.half_opened = False
            for conn in list(self._conns.values()):
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.resume_reading()
                    held, conn._held = conn._held, b""
                    if held:
                        conn.data_received(held)

    def slow_drip(self, interval: float = 0.005, chunk: int = 1) -> None:
        """Deliver all output ``chunk`` bytes every ``interval`` seconds: valid lines arrive a
        byte at a time, and answers fall behind when the client needs more than that."""
        if not interval > 0 or chunk < 1:
            raise ValueError("slow_drip needs interval > 0 and chunk >= 1")
        self.drip_interval = float(interval)
        self.drip_chunk = int(chunk)

    def stop_drip(self) -> None:
        """Back to normal writes; whatever was held back is written at once."""
        self.drip_interval = 0.0
        for conn in self._conns.values():
            conn.flush_drip()

    def wrong_ids(self, mode: str | None = "offset") -> None:
        """Answer submits under the wrong JSON-RPC id: ``"offset"`` (an id the client never
        used), ``"string"`` (the id as a string) or ``"null"``; None answers correctly again."""
        if mode not in (None, "offset", "string", "null"):
            raise ValueError(f"unknown wrong_ids mode {mode!r}")
        self.wrong_id_mode = mode

    def unknown_id_answers(self, on: bool = True) -> None:
        """After every submit answer, also send an answer (accept or error, alternately) to an
        id the client never used."""
        self.answering_unknown_ids = on

    def duplicate_answers(self, on: bool = True) -> None:
        """Answer every submit twice (the same line)."""
        self.duplicating_answers = on

    def set_version_mask_before_configure_answer(self, on: bool = True) -> None:
        """Send mining.set_version_mask just before the mining.configure answer (BIP310 lets a
        server send it at any time; firmware that reads the next line as the answer breaks)."""
        self.mask_before_configure_answer = on

    def heal(self) -> None:
        """Clear every fault mode (stall, half-open, drip, answer faults); keeps listening state."""
        self.unstall()
        self.end_half_open()
        self.stop_drip()
        self.wrong_id_mode = None
        self.duplicating_answers = False
        self.answering_unknown_ids = False
        self.mask_before_configure_answer = False

    def send_set_extranonce(self, size: int | None = None, notify: bool = True) -> None:
        """Give every client a new unique extranonce1 (and size), then (``notify``) a new
        clean job, from which clients following NiceHash's rule use it."""
        if size is not None and not 0 <= size <= 16:
            raise ValueError("extranonce2 size out of range")
        for conn in list(self._conns.values()):
            if not conn.subscribed:
                continue
            conn.extranonce1 = self._next_extranonce1()
            if size is not None:
                conn.extranonce2_size = size
            conn.write(messages.notification(
                "mining.set_extranonce", [conn.extranonce1.hex(), conn.extranonce2_size]))
        if self._started and notify:
            self.broadcast_job(clean=True)

    def send_reconnect(self, host: str | None = None, port: int | None = None,
                       wait: int = 0) -> None:
        """Send client.reconnect (no params = reconnect to the same place)."""
        if host is None and port is None and not wait:
            params: list[Any] = []
        else:
            params = [host or self.config.host, port or self.port, wait]
        line = messages.notification("client.reconnect", params)
        for conn in list(self._conns.values()):
            conn.write(line)

    def send_message(self, text: str) -> None:
        """client.show_message to every client."""
        line = messages.notification("client.show_message", [text])
        for conn in list(self._conns.values()):
            conn.write(line)

    def set_answer_delay(self, seconds: float) -> None:
        self.answer_delay = max(0.0, float(seconds))

    def set_reject_ratio(self, ratio: float) -> None:
        self.reject_ratio = min(1.0, max(0.0, float(ratio)))

    # --- views ------------------------------------------------------------------------------

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def status(self) -> str:
        """One status line for the CLI."""
        rej = ",".join(f"{k}:{v}" for k, v in sorted(self.rejected.items())) or "0"
        diffs = [s.difficulty for s in self.open_stats()] if self.config.vardiff else []
        vardiff = f" vardiff={min(diffs):.3g}..{max(diffs):.3g}" if diffs else ""
        return (f"{self.name} :{self.port} conns={self.connections} "
                f"total={self.total_connections} workers={len(self.authorized_workers)} "
                f"accepted={self.accepted} rejected={rej} job={self.current_job_id}{vardiff}"
                f"{' STALLED' if self.stalled else ''}"
                f"{' HALF-OPEN' if self.half_opened else ''}"
                f"{' DRIP' if self.drip_interval > 0 else ''}"
                f"{f' WRONG-IDS:{self.wrong_id_mode}' if self.wrong_id_mode else ''}"
                f"{' DUP-ANSWERS' if self.duplicating_answers else ''}"
                f"{' UNKNOWN-IDS' if self.answering_unknown_ids else ''}"
                f"{' REFUSING' if self._server is None and self._started else ''}")
