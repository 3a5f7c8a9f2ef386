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
import socket
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ..stratum import errors, messages, work
from ..stratum.errors import StratumError
from ..stratum.framing import LineFramer, LineTooLong
from ._wait import wait_until
from .vardiff import Vardiff, VardiffConfig

log = logging.getLogger("proxy.sim.pool")

__all__ = ["SimConnStats", "SimPool", "SimPoolConfig", "SimShare"]

NTIME_BASE = 1_700_000_000
JOBS_KEPT = 8
NTIME_FUTURE_LIMIT = 7200
REJECTED_BY_SIM = "rejected by sim"
WRONG_ID_OFFSET = 1_000_000  # wrong_ids("offset"): answers carry an id the client never used
UNKNOWN_ID_BASE = 10_000_000  # unknown_id_answers(): ids far above anything a client sends
METHODS_KEPT = 32  # per connection, the first methods received, in order
DIFFICULTIES_KEPT = 256  # per connection, the last set_difficulty sent
CONN_STATS_KEPT = 10_000  # per-connection records kept after their connection closed


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


@dataclass
class SimShare:
    """One mining.submit as the pool saw and judged it."""

    conn_id: int
    worker: str
    job_id: str
    extranonce1: str
    extranonce2: str
    ntime: int
    nonce: int
    version_bits: int | None
    block_hash_hex: str
    valid: bool
    reason: str  # "ok" or why it was rejected
    code: int | None = None  # the error code answered, None when accepted
    difficulty: float = 0.0  # what it was judged (and, when valid, credited) at


@dataclass
class SimConnStats:
    """One client connection as the pool saw it; kept a while after it closes."""

    conn_id: int
    difficulty: float  # in force now: what the next job is sent at
    opened_at: float
    closed: bool = False
    user_agent: str = ""
    methods: list[str] = field(default_factory=list)  # the first METHODS_KEPT, in order
    configure_extensions: list[str] = field(default_factory=list)
    configure_options: dict[str, Any] = field(default_factory=dict)
    suggested_difficulty: float | None = None
    minimum_difficulty: float | None = None  # from mining.configure, when honoured
    accepted: int = 0
    rejected: Counter[int] = field(default_factory=Counter)
    credited: float = 0.0  # sum of the difficulty of accepted shares
    # the mining.set_difficulty sent (the last DIFFICULTIES_KEPT): (loop time, difficulty)
    difficulty_sent: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=DIFFICULTIES_KEPT))
    retargets: int = 0  # vardiff changes (share rate, client floors), not set_difficulty()


@dataclass
class _Job:
    job_id: str
    prevhash: bytes
    coinb1: bytes
    coinb2: bytes
    branch: list[bytes]
    version: int
    nbits: int
    ntime: int
    params: list[Any]  # wire params without the clean flag

    def notify_line(self, clean: bool) -> bytes:
        return messages.notification("mining.notify", [*self.params, clean])


class _Reject(Exception):
    def __init__(self, code: int, reason: str, text: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.text = text or errors.MESSAGES.get(code, "error")


class _PoolConn(asyncio.Protocol):
    """One client connection: its extranonce, negotiated mask and the jobs it was sent."""

    def __init__(self, pool: SimPool, conn_id: int) -> None:
        self.pool = pool
        self.conn_id = conn_id
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer()
        self.extranonce1 = b""
        self.extranonce2_size = pool.config.extranonce2_size
        self.version_mask = 0
        self.subscribed = False
        self.extranonce_subscribed = False
        self.work_sent = False
        self.workers: set[str] = set()
        # job_id -> (extranonce1, difficulty) in force when that job was sent here
        self.sent_jobs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.stats = pool._new_stats(conn_id)
        self.vardiff: Vardiff | None = None  # with config.vardiff, from the first work on
        self._drip = bytearray()  # output held back by slow_drip(), written a chunk at a time
        self._held = b""  # input delivered while half-open, read when it ends
        self._drip_timer: asyncio.TimerHandle | None = None

    @property
    def difficulty(self) -> float:
        return self.stats.difficulty

    @difficulty.setter
    def difficulty(self, value: float) -> None:
        self.stats.difficulty = value

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence no isinstance
        self.transport = cast(asyncio.Transport, transport)
        self.pool._opened(self)
        if self.pool.half_opened:
            transport.pause_reading()  # type: ignore[attr-defined]  # accept, then never read

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drip_timer is not None:
            self._drip_timer.cancel()
            self._drip_timer = None
        self.pool._closed(self)

    def data_received(self, data: bytes) -> None:
        if self.pool.stalled:
            return  # a hung pool: the kernel still acks, nobody reads
        if self.pool.half_opened:
            # reading is paused, but a transport may deliver what it had already read (uvloop
            # starts reading after connection_made): hold it, as the kernel would
            self._held += data
            if self.transport is not None:
                self.transport.pause_reading()
            return
        try:
            lines = self.framer.feed(data)
        except LineTooLong:
            log.warning("%s: conn %d sent an over-long line, closing", self.pool.name,
                        self.conn_id)
            self.close()
            return
        for line in lines:
            try:
                self._handle(line)
            except Exception:  # one bad line must not take the pool down
                log.exception("%s: conn %d: error handling %r", self.pool.name, self.conn_id,
                              line[:200])

    # --- output -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        pool = self.pool
        if pool.stalled or pool.half_opened or self.transport is None \
                or self.transport.is_closing():
            return
        if pool.drip_interval > 0:
            self._drip += data
            if self._drip_timer is None:
                self._drip_timer = asyncio.get_running_loop().call_later(
                    pool.drip_interval, self._drip_tick)
            return
        self.transport.write(data)

    def _drip_tick(self) -> None:
        """slow_drip(): write the next ``drip_chunk`` bytes of held-back output."""
        self._drip_timer = None
        pool = self.pool
        if self.transport is None or self.transport.is_closing():
            self._drip.clear()
            return
        if pool.drip_interval <= 0:
            self.flush_drip()
            return
        chunk = bytes(self._drip[:pool.drip_chunk])
        del self._drip[:pool.drip_chunk]
        pool.dripped_bytes += len(chunk)
        self.transport.write(chunk)
        if self._drip:
            self._drip_timer = asyncio.get_running_loop().call_later(pool.drip_interval,
                                                                     self._drip_tick)

    def flush_drip(self) -> None:
        """Write whatever slow_drip() still holds, at once (when the drip is turned off)."""
        if self._drip_timer is not None:
            self._drip_timer.cancel()
            self._drip_timer = None
        data, self._drip = bytes(self._drip), bytearray()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def answer(self, data: bytes) -> None:
        delay = self.pool.answer_delay
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.write, data)
        else:
            self.write(data)

    def answer_submit(self, msg_id: Any, data: bytes) -> None:
        """A submit's answer, through the answer-level faults (wrong id, extra, duplicate)."""
        pool = self.pool
        mode = pool.wrong_id_mode
        if mode is not None:
            wrong: Any = (msg_id + WRONG_ID_OFFSET if mode == "offset" and isinstance(msg_id, int)
                          else str(msg_id) if mode == "string" else None)
            data = data.replace(b'{"id":' + messages.encode(msg_id) + b",",
                                b'{"id":' + messages.encode(wrong) + b",", 1)
            pool.wrong_id_answers += 1
        self.answer(data)
        if pool.duplicating_answers:
            pool.duplicate_answers_sent += 1
            self.answer(data)
        if pool.answering_unknown_ids:
            pool._unknown_id += 1
            unknown = UNKNOWN_ID_BASE + pool._unknown_id
            pool.unknown_answers_sent += 1
            self.answer(messages.true_response(unknown) if pool._unknown_id % 2
                        else messages.error_response(unknown, errors.OTHER, "no such request"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def reset(self) -> None:
        """Abort with SO_LINGER (1, 0) so the peer sees a TCP RST, not a FIN."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def send_job(self, job: _Job, clean: bool, line: bytes | None = None) -> None:
        self.sent_jobs[job.job_id] = (self.extranonce1, self.difficulty)
        self.sent_jobs.move_to_end(job.job_id)
        while len(self.sent_jobs) > 2 * JOBS_KEPT:
            self.sent_jobs.popitem(last=False)
        self.write(line if line is not None else job.notify_line(clean))

    def send_work(self) -> None:
        """Difficulty then the current job: what a client needs before it can mine."""
        pool = self.pool
        self.work_sent = True
        if pool.config.vardiff:
            stats = self.stats
            self.vardiff = Vardiff(pool.vardiff_config, pool.difficulty, pool.now())
            if stats.minimum_difficulty is not None:
                self.vardiff.set_floor(stats.minimum_difficulty, pool.now())
            if stats.suggested_difficulty is not None:
                self.vardiff.set_floor(stats.suggested_difficulty, pool.now(), exact=True)
            self.difficulty = self.vardiff.difficulty
        else:
            self.difficulty = pool.difficulty
        self.send_difficulty()
        job = pool.current_job
        if job is not None:
            self.send_job(job, True)

    def send_difficulty(self, line: bytes | None = None) -> None:
        """mining.set_difficulty with the connection's difficulty: it applies to the jobs sent
        after it (shares for earlier jobs are credited at the lower of the two)."""
        self.stats.difficulty_sent.append((self.pool.now(), self.difficulty))
        self.write(line if line is not None
                   else messages.notification("mining.set_difficulty", [self.difficulty]))

    def _retargeted(self, difficulty: float | None) -> None:
        if difficulty is not None:
            self.difficulty = difficulty
            self.stats.retargets += 1
            self.send_difficulty()

    # --- requests ---------------------------------------------------------------------------

    def _handle(self, line: bytes) -> None:
        try:
            msg = messages.decode(line)
        except messages.BadMessage as exc:
            self.pool.bad_lines += 1
            self.write(messages.error_response(exc.msg_id, errors.PARSE_ERROR, str(exc)))
            return
        method = msg.method
        if method is None:
            return  # a response to something we sent (client.get_version ...)
        if len(self.stats.methods) < METHODS_KEPT:
            self.stats.methods.append(method[:64])
        handler = self._HANDLERS.get(method)
        if handler is None:
            if msg.id is not None:
                self.write(messages.error_response(msg.id, errors.METHOD_NOT_FOUND))
            return
        try:
            handler(self, msg)
        except StratumError as exc:
            self.write(messages.error_response(msg.id, exc.code, exc.message))

    def _subscribe(self, msg: messages.Message) -> None:
        if not self.subscribed:
            self.subscribed = True
            fixed = self.pool._fixed
            if fixed is not None:
                self.extranonce1, self.extranonce2_size = fixed[1], fixed[2]
            else:
                self.extranonce1 = self.pool._next_extranonce1()
            params = msg.params or []
            if params and isinstance(params[0], str):
                self.stats.user_agent = params[0][:128]
        sid = f"{self.conn_id:08x}"
        result = [[["mining.set_difficulty", sid], ["mining.notify", sid]],
                  self.extranonce1.hex(), self.extranonce2_size]
        self.write(messages.response(msg.id, result))
        if self.workers and not self.work_sent:
            self.send_work()

    def _configure(self, msg: messages.Message) -> None:
        params = msg.params or []
        names = params[0] if params and isinstance(params[0], list) else []
        opts = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        self.stats.configure_extensions = [str(n)[:64] for n in names]
        self.stats.configure_options = dict(opts)
        result: dict[str, Any] = {}
        for name in names:
            if name == "version-rolling":
                requested = 0xFFFFFFFF
                raw = opts.get("version-rolling.mask")
                if isinstance(raw, str):
                    try:
                        requested = int(raw, 16) & 0xFFFFFFFF
                    except ValueError:
                        raise StratumError(errors.INVALID_PARAMS, "bad version-rolling.mask") \
                            from None
                self.version_mask = requested & self.pool.config.version_mask
                result["version-rolling"] = True
                result["version-rolling.mask"] = f"{self.version_mask:08x}"
            elif name == "minimum-difficulty":
                # honoured as a floor by a vardiff pool (goPool, ckpool's mindiff); a pool
                # with one fixed difficulty cannot promise it, and says false (DATUM does)
                result[name] = self._minimum_difficulty(opts.get("minimum-difficulty.value"))
            elif name == "subscribe-extranonce":
                self.extranonce_subscribed = True  # the sim pool can send set_extranonce
                result[name] = True
            elif isinstance(name, str):
                result[name] = False
        if self.pool.mask_before_configure_answer and "version-rolling" in result:
            self.write(messages.notification("mining.set_version_mask",
                                             [f"{self.version_mask:08x}"]))
        self.write(messages.response(msg.id, result))

    def _minimum_difficulty(self, value: Any) -> bool:
        if not self.pool.config.vardiff or isinstance(value, bool) \
                or not isinstance(value, (int, float)) or not value > 0:
            return False
        self.stats.minimum_difficulty = float(value)
        if self.vardiff is not None:
            self._retargeted(self.vardiff.set_floor(float(value), self.pool.now()))
        return True

    def _suggest_difficulty(self, msg: messages.Message) -> None:
        """Recorded whenever it comes (WhatsMiner sends it before subscribe); a vardiff pool
        goes to the suggested difficulty and keeps it as the floor, as ckpool does."""
        value = messages.parse_difficulty(msg.params or [])
        self.stats.suggested_difficulty = value
        if msg.id is not None:
            self.write(messages.response(msg.id, True))
        if self.vardiff is not None:
            self._retargeted(self.vardiff.set_floor(value, self.pool.now(), exact=True))

    def _authorize(self, msg: messages.Message) -> None:
        params = msg.params or []
        worker = params[0] if params and isinstance(params[0], str) else ""
        if not worker:
            self.write(messages.response(msg.id, False))
            return
        self.workers.add(worker)
        self.pool.authorized_workers.add(worker)
        self.write(messages.response(msg.id, True))
        if self.subscribed and not self.work_sent:
            self.send_work()

    def _true(self, msg: messages.Message) -> None:
        if msg.method == "mining.extranonce.subscribe":
            self.extranonce_subscribed = True
        if msg.id is not None:
            self.write(messages.response(msg.id, True))

    def _submit(self, msg: messages.Message) -> None:
        pool = self.pool
        params = msg.params or []
        share = SimShare(self.conn_id, str(params[0]) if params else "",
                         str(params[1]) if len(params) > 1 else "", self.extranonce1.hex(),
                         str(params[2]) if len(params) > 2 else "", 0, 0, None, "", False, "")
        stats = self.stats
        try:
            self._validate(params, share)
        except _Reject as rej:
            share.valid, share.reason, share.code = False, rej.reason, rej.code
            pool.rejected[rej.code] += 1
            stats.rejected[rej.code] += 1
            pool._record(share)
            self.answer_submit(msg.id, messages.error_response(msg.id, rej.code, rej.text))
            return
        share.valid, share.reason = True, "ok"
        pool.accepted += 1
        stats.accepted += 1
        stats.credited += share.difficulty
        pool._record(share)
        self.answer_submit(msg.id, messages.true_response(msg.id))
        if self.vardiff is not None:
            self._retargeted(self.vardiff.on_share(share.difficulty, pool.now()))

    def _validate(self, params: list[Any], share: SimShare) -> None:
        """Judge a share like a real pool; raise _Reject with the code it would answer."""
        pool = self.pool
        try:
            sub = messages.parse_submit(params)
        except StratumError as exc:
            raise _Reject(errors.OTHER, "malformed", exc.message) from None
        share.worker, share.job_id = sub.worker, sub.job_id
        share.extranonce2 = sub.extranonce2.hex()
        share.ntime, share.nonce, share.version_bits = sub.ntime, sub.nonce, sub.version_bits
        if not self.subscribed:
            raise _Reject(errors.NOT_SUBSCRIBED, "not_subscribed")
        if sub.worker not in self.workers:
            raise _Reject(errors.UNAUTHORIZED, "unauthorized")
        job = pool._jobs.get(sub.job_id)
        if job is None:
            raise _Reject(errors.JOB_NOT_FOUND, "stale")
        if len(sub.extranonce2) != self.extranonce2_size:
            raise _Reject(errors.OTHER, "bad_extranonce2_size",
                          f"extranonce2 must be {self.extranonce2_size} bytes")
        if not job.ntime <= sub.ntime <= job.ntime + NTIME_FUTURE_LIMIT:
            raise _Reject(errors.OTHER, "ntime_out_of_range", "ntime out of range")
        mask = self.version_mask
        if sub.version_bits is not None and sub.version_bits & ~mask & 0xFFFFFFFF:
            raise _Reject(errors.OTHER, "version_bits_outside_mask",
                          "version bits outside the negotiated mask")
        sent_ext1, sent_diff = self.sent_jobs.get(sub.job_id, (self.extranonce1, self.difficulty))
        share.extranonce1 = sent_ext1.hex()
        key = (sub.job_id, sent_ext1, sub.extranonce2, sub.ntime, sub.nonce, sub.version_bits)
        if key in pool._seen:
            raise _Reject(errors.DUPLICATE, "duplicate")
        # credited at the difficulty the job was sent at; after a change, at the lower of
        # that and the new one (firmware that applies a new difficulty to the job in hand,
        # and firmware that waits for the next notify, are both paid: ckpool 3a6da1f)
        share.difficulty = min(sent_diff, self.difficulty)
        target = work.difficulty_to_target(share.difficulty)
        version = work.rolled_version(job.version, sub.version_bits, mask)
        # The extranonce1 in force when the job was sent, or the current one (a client may
        # apply mining.set_extranonce to a job it already holds): a real pool accepts either.
        candidates = [sent_ext1] if sent_ext1 == self.extranonce1 else [sent_ext1,
                                                                         self.extranonce1]
        digest = b""
        for ext1 in candidates:
            h = work.share_hash(job.coinb1, ext1, sub.extranonce2, job.coinb2, job.branch,
                                version, job.prevhash, job.nbits, sub.ntime, sub.nonce)
            if not digest:
                digest = h
            if work.hash_to_int(h) <= target:
                digest = h
                share.extranonce1 = ext1.hex()
                break
        else:
            share.block_hash_hex = work.block_hash_hex(digest)
            raise _Reject(errors.LOW_DIFFICULTY, "low_difficulty")
        share.block_hash_hex = work.block_hash_hex(digest)
        pool._remember(key)
        if pool.reject_ratio > 0 and pool._rng.random() < pool.reject_ratio:
            raise _Reject(errors.OTHER, "rejected_by_sim", REJECTED_BY_SIM)

    _HANDLERS: dict[str, Callable[[_PoolConn, messages.Message], None]] = {
        "mining.subscribe": _subscribe,
        "mining.configure": _configure,
        "mining.authorize": _authorize,
        "mining.submit": _submit,
        "mining.extranonce.subscribe": _true,
        "mining.suggest_difficulty": _suggest_difficulty,
        "mining.suggest_target": _true,
    }


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
        self._conns: dict[int, _PoolConn] = {}
        self._conn_counter = 0
        self._ext1_counter = self._rng.getrandbits(32)
        self._job_counter = self._rng.getrandbits(16) << 16
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
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

    def _make_conn(self) -> _PoolConn:
        self._conn_counter += 1
        return _PoolConn(self, self._conn_counter)

    # --- state changes from connections -----------------------------------------------------

    def _opened(self, conn: _PoolConn) -> None:
        self._conns[conn.conn_id] = conn
        self.connections += 1
        self.total_connections += 1
        self._notify_change()

    def _closed(self, conn: _PoolConn) -> None:
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
    def current_job(self) -> _Job | None:
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

    def _make_job(self) -> _Job:
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
        return _Job(job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, params)

    def _add_job(self, job: _Job) -> None:
        self._jobs[job.job_id] = job
        self._jobs.move_to_end(job.job_id)
        while len(self._jobs) > JOBS_KEPT:
            self._jobs.popitem(last=False)
        self.jobs_sent += 1

    def _broadcast(self, job: _Job, clean: bool) -> None:
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
        job = _Job(n.job_id, n.prevhash, n.coinb1, n.coinb2, list(n.merkle_branch), n.version,
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
