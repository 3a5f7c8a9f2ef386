"""One client connection of the simulated pool (``proxy.sim.pool``): its extranonce, its
negotiated mask and difficulty, the jobs it was sent and its judgement of every share, plus
the records tests read (``SimShare``, ``SimConnStats``)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..stratum import errors, messages, work
from ..stratum.errors import StratumError
from ..stratum.framing import LineFramer, LineTooLong
from .vardiff import Vardiff

if TYPE_CHECKING:
    from .pool import SimPool

log = logging.getLogger("proxy.sim.pool")

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
class SimJob:
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


class SimReject(Exception):
    def __init__(self, code: int, reason: str, text: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.text = text or errors.MESSAGES.get(code, "error")


class SimPoolConnection(asyncio.Protocol):
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

    def send_job(self, job: SimJob, clean: bool, line: bytes | None = None) -> None:
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
        except SimReject as rej:
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
        """Judge a share like a real pool; raise SimReject with the code it would answer."""
        pool = self.pool
        try:
            sub = messages.parse_submit(params)
        except StratumError as exc:
            raise SimReject(errors.OTHER, "malformed", exc.message) from None
        share.worker, share.job_id = sub.worker, sub.job_id
        share.extranonce2 = sub.extranonce2.hex()
        share.ntime, share.nonce, share.version_bits = sub.ntime, sub.nonce, sub.version_bits
        if not self.subscribed:
            raise SimReject(errors.NOT_SUBSCRIBED, "not_subscribed")
        if sub.worker not in self.workers:
            raise SimReject(errors.UNAUTHORIZED, "unauthorized")
        job = pool._jobs.get(sub.job_id)
        if job is None:
            raise SimReject(errors.JOB_NOT_FOUND, "stale")
        if len(sub.extranonce2) != self.extranonce2_size:
            raise SimReject(errors.OTHER, "bad_extranonce2_size",
                          f"extranonce2 must be {self.extranonce2_size} bytes")
        if not job.ntime <= sub.ntime <= job.ntime + NTIME_FUTURE_LIMIT:
            raise SimReject(errors.OTHER, "ntime_out_of_range", "ntime out of range")
        mask = self.version_mask
        if sub.version_bits is not None and sub.version_bits & ~mask & 0xFFFFFFFF:
            raise SimReject(errors.OTHER, "version_bits_outside_mask",
                          "version bits outside the negotiated mask")
        sent_ext1, sent_diff = self.sent_jobs.get(sub.job_id, (self.extranonce1, self.difficulty))
        share.extranonce1 = sent_ext1.hex()
        key = (sub.job_id, sent_ext1, sub.extranonce2, sub.ntime, sub.nonce, sub.version_bits)
        if key in pool._seen:
            raise SimReject(errors.DUPLICATE, "duplicate")
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
            raise SimReject(errors.LOW_DIFFICULTY, "low_difficulty")
        share.block_hash_hex = work.block_hash_hex(digest)
        pool._remember(key)
        if pool.reject_ratio > 0 and pool._rng.random() < pool.reject_ratio:
            raise SimReject(errors.OTHER, "rejected_by_sim", REJECTED_BY_SIM)

    _HANDLERS: dict[str, Callable[[SimPoolConnection, messages.Message], None]] = {
        "mining.subscribe": _subscribe,
        "mining.configure": _configure,
        "mining.authorize": _authorize,
        "mining.submit": _submit,
        "mining.extranonce.subscribe": _true,
        "mining.suggest_difficulty": _suggest_difficulty,
        "mining.suggest_target": _true,
    }
