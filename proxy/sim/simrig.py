"""One simulated rig's connection (``proxy.sim.rigs`` runs fleets of them): the handshake
its firmware profile dictates, the jobs and difficulties it is sent, and the shares it finds
and submits, each answer counted."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, cast

from ..stratum import errors, messages, work
from ..stratum.errors import StratumError
from ..stratum.framing import LineFramer, LineTooLong
from .firmware import PROFILES, RigProfile

log = logging.getLogger("proxy.sim.rigs")

__all__ = ["PROFILES", "RigFleet", "RigProfile", "SimRig"]


if TYPE_CHECKING:
    from .rigs import RigFleet

SCAN_LIMIT = 200_000  # hashes per attempt before giving up until the next attempt
SCAN_CHUNK = 2_048  # hashes between yields to the event loop
HOPELESS_FACTOR = 20  # skip attempts needing > 20x SCAN_LIMIT expected hashes
NOTIFY_HISTORY = 256
_sha256 = hashlib.sha256
_pack_nonce = struct.Struct("<I").pack


class SimRig(asyncio.Protocol):
    """One rig: a single Stratum connection (re-dialled on drops) and its mining loop."""

    def __init__(self, fleet: RigFleet, index: int, host: str, port: int) -> None:
        self.fleet = fleet
        self.index = index
        self.worker = f"{fleet.worker_prefix}.{index:04d}"
        self.host = host
        self.port = port
        sources = fleet.source_addresses
        self.source = (sources[index % len(sources)], 0) if sources else None
        self.local_address = ""  # this rig's own address:port, once connected
        self.rng = random.Random(fleet.rng.getrandbits(64))
        self.profile = fleet.profile
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer(256 * 1024)
        self._next_id = 1
        self._kinds: dict[int, str] = {}
        # --- session state (reset on every connection) ---
        self.connected = False
        self.subscribed = False
        self.authorized = False
        self.extranonce_subscribed = False  # follows mining.set_extranonce
        self.min_difficulty_honoured = False  # minimum-difficulty answered true
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.target = work.difficulty_to_target(1.0)
        self.version_mask = 0
        self.job: messages.Notify | None = None
        self.latest_coinb1: bytes | None = None
        self._pending_extranonce: tuple[bytes, int] | None = None
        # set_difficulty not counting yet (profile.difficulty_applies): the next notify's,
        # and with "stacked" the one after it
        self._difficulty_queue: list[float] = []
        self._configure_line_next = False  # the next line is taken as configure's answer
        self._last_rx = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._generation = 0  # bumped whenever in-progress work becomes obsolete
        # --- history and counters (kept across connections) ---
        self.notifies: deque[tuple[float, str, bytes, bool]] = deque(maxlen=NOTIFY_HISTORY)
        self.submitted = 0
        self.accepted = 0
        self.rejected: Counter[int | str] = Counter()
        self.reject_messages: dict[int | str, str] = {}  # the latest message per code
        self.pending: dict[int, tuple[float, str]] = {}  # submit id -> (send time, job id)
        self.lost = 0  # submits still pending when the connection dropped
        self.disconnects = 0  # connection losses we did not initiate
        self.connects = 0
        self.connect_failures = 0
        self.reconnect_requests = 0
        self.set_extranonce_received = 0
        self.masks: list[int] = []  # version masks received (configure, set_version_mask)
        self.messages_received: Counter[str] = Counter()
        self.shown_messages: list[str] = []
        self.bad_lines = 0
        self.hopeless_attempts = 0
        self.refusals: Counter[str] = Counter()  # sessions this firmware gave up, by reason
        self.violations: Counter[str] = Counter()  # server promises broken, by kind
        # the miner is parked until the rig can mine again (mining paused, not connected,
        # no job): it submits nothing until then
        self.idle = False
        # --- control ---
        self._stopping = False
        self._closing_on_purpose = False
        self._reconnect_to: tuple[str, int, float] | None = None
        self._closed = asyncio.Event()
        self._wake = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence no isinstance
        self.transport = cast(asyncio.Transport, transport)
        local = transport.get_extra_info("sockname")
        self.local_address = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else ""
        self.framer = LineFramer(256 * 1024)
        self._kinds.clear()
        self.connected = True
        self.subscribed = self.authorized = self.extranonce_subscribed = False
        self.min_difficulty_honoured = False
        self.extranonce1, self.extranonce2_size = b"", 0
        self.difficulty, self.target = 1.0, work.difficulty_to_target(1.0)
        self.version_mask = 0
        self.job, self.latest_coinb1, self._pending_extranonce = None, None, None
        self._difficulty_queue.clear()
        self._generation += 1
        self._closing_on_purpose = False
        self._closed.clear()
        self.connects += 1
        self._last_rx = time.monotonic()
        self._arm_watchdog(self.profile.silence_timeout_s)
        transport.write(self._opening_lines())
        self.fleet._changed_now()

    # --- the handshake, as the profile's firmware does it ---------------------------------------

    def _opening_lines(self) -> bytes:
        """What the rig writes on connect: all of it when pipelining, else up to the first
        request whose answer it waits for."""
        fleet, p = self.fleet, self.profile
        out = self._suggest_line() if p.suggest_first else b""
        if fleet.version_rolling:
            out += self._configure_line()
            if not fleet.pipeline:
                self._configure_line_next = p.configure_answer_is_next_line
                return out
        if not fleet.pipeline:
            return out + self._subscribe_lines()
        return out + self._subscribe_lines() + self._authorize_lines()

    def _configure_line(self) -> bytes:
        p = self.profile
        names: list[str] = ["version-rolling"]
        options: dict[str, Any] = {"version-rolling.mask": f"{p.requested_mask:08x}"}
        if p.min_bit_count is not None:
            options["version-rolling.min-bit-count"] = p.min_bit_count
        if p.minimum_difficulty is not None:
            names.append("minimum-difficulty")
            options["minimum-difficulty.value"] = p.minimum_difficulty
        if p.configure_subscribe_extranonce:
            names.append("subscribe-extranonce")
        return self._request("configure", "mining.configure", [names, options])

    def _suggest_line(self) -> bytes:
        value = self.profile.suggest_difficulty
        return b"" if value is None else \
            self._request("other", "mining.suggest_difficulty", [value])

    def _subscribe_lines(self) -> bytes:
        out = self._request("subscribe", "mining.subscribe", [self.profile.user_agent])
        if self.fleet.extranonce_subscribe:
            # NiceHash's spec: whatever the answer, the miner then follows set_extranonce
            self.extranonce_subscribed = True
            out += self._request("xsub", "mining.extranonce.subscribe", [])
        return out

    def _authorize_lines(self) -> bytes:
        out = self._request("authorize", "mining.authorize", [self.worker, self.fleet.password])
        return out if self.profile.suggest_first else out + self._suggest_line()

    def _refuse(self, reason: str) -> None:
        """Give the session up the way this firmware would (then redial): a disconnect."""
        self.refusals[reason] += 1
        log.info("%s (%s): dropping the session: %s", self.worker, self.profile.name, reason)
        self.close(on_purpose=False)

    def _arm_watchdog(self, delay: float | None) -> None:
        if delay is not None:
            self._watchdog = asyncio.get_running_loop().call_later(delay, self._check_silence)

    def _check_silence(self) -> None:
        """cgminer-style: nothing received for ``silence_timeout_s`` means a dead pool."""
        self._watchdog = None
        limit = self.profile.silence_timeout_s
        if not self.connected or limit is None:
            return
        quiet = time.monotonic() - self._last_rx
        if quiet >= limit:
            self._refuse(f"pool silent {limit:g} s")
        else:
            self._arm_watchdog(limit - quiet)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.connected = self.subscribed = self.authorized = False
        self.transport = None
        self.job = None
        self.latest_coinb1 = None
        self._generation += 1
        if self.pending and not self._stopping:
            self.lost += len(self.pending)
            self.pending.clear()
        if not self._stopping and not self._closing_on_purpose:
            self.disconnects += 1
            log.debug("%s: connection lost (%s)", self.worker, exc)
        self._closed.set()
        self._wake.set()
        self.fleet._changed_now()

    def data_received(self, data: bytes) -> None:
        try:
            lines = self.framer.feed(data)
        except LineTooLong:
            log.warning("%s: over-long line from upstream, dropping connection", self.worker)
            if self.transport is not None:
                self.transport.abort()
            return
        now = time.monotonic()
        self._last_rx = now
        for line in lines:
            if self.transport is None or self.transport.is_closing():
                break  # the rig gave the session up: the rest is never read
            try:
                msg = messages.decode(line)
            except messages.BadMessage:
                self.bad_lines += 1
                self.messages_received["garbage"] += 1
                if self._configure_line_next:
                    self._refuse("the line after mining.configure is not JSON")
                continue
            self.messages_received[msg.method or "response"] += 1
            try:
                if self._configure_line_next:
                    self._take_configure_line(msg)
                elif msg.method is None:
                    self._on_response(msg, now)
                else:
                    self._on_method(msg, now)
            except StratumError as exc:
                self.bad_lines += 1
                log.warning("%s: bad %s: %s", self.worker, msg.method or "response", exc.message)
        self._wake.set()
        self.fleet._changed_now()

    # --- output -----------------------------------------------------------------------------

    def _request(self, kind: str, method: str, params: list[Any]) -> bytes:
        msg_id = self._next_id
        self._next_id += 1
        self._kinds[msg_id] = kind
        return messages.request(msg_id, method, params)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- incoming ---------------------------------------------------------------------------

    def _on_response(self, msg: messages.Message, now: float) -> None:
        msg_id = msg.id if isinstance(msg.id, int) else -1
        kind = self._kinds.pop(msg_id, "")
        if kind == "share":
            sent = self.pending.pop(msg_id, None)
            if sent is not None:
                self.fleet.latencies.append(now - sent[0])
            if msg.result is True and msg.error is None:
                self.accepted += 1
            else:
                err = msg.error
                code = err[0] if isinstance(err, list) and err and isinstance(err[0], int) \
                    else "other"
                self.rejected[code] += 1
                self.reject_messages[code] = str(err[1] if isinstance(err, list)
                                                 and len(err) > 1 else err)[:200]
        elif kind == "configure":
            self._on_configure(msg)
        elif kind == "subscribe":
            if msg.error is not None or msg.result is None:
                log.warning("%s: subscribe refused: %s", self.worker, msg.error)
                return
            sub = messages.parse_subscribe_result(msg.result)
            if not self._extranonce2_fits(sub.extranonce2_size):
                return
            self.extranonce1, self.extranonce2_size = sub.extranonce1, sub.extranonce2_size
            self.subscribed = True
            if not self.fleet.pipeline:
                self._write(self._authorize_lines())
        elif kind == "authorize":
            self.authorized = msg.result is True and msg.error is None
            if not self.authorized:
                log.warning("%s: authorize refused: %s", self.worker, msg.error)

    def _take_configure_line(self, msg: messages.Message) -> None:
        """cgminer: whatever line comes first after mining.configure is parsed as its answer."""
        self._configure_line_next = False
        if msg.method is not None:
            self._refuse(f"{msg.method} arrived where mining.configure's answer was expected")
            return
        self._kinds.pop(msg.id if isinstance(msg.id, int) else -1, None)
        self._on_configure(msg)

    def _on_configure(self, msg: messages.Message) -> None:
        p = self.profile
        result = msg.result if isinstance(msg.result, dict) and msg.error is None else {}
        if result.get("version-rolling") is True:
            try:
                granted = messages.parse_version_mask(
                    result.get("version-rolling.mask", "00000000"))
            except StratumError:
                granted = 0
            self._set_mask(granted)
        if p.requires_version_rolling and not self.version_mask:
            self._refuse("mining.configure did not grant version rolling")
            return
        if p.minimum_difficulty is not None:
            self.min_difficulty_honoured = result.get("minimum-difficulty") is True
        if p.configure_subscribe_extranonce and result.get("subscribe-extranonce") is True:
            self.extranonce_subscribed = True
        if not self.fleet.pipeline:
            self._write(self._subscribe_lines())

    def _extranonce2_fits(self, size: int) -> bool:
        low, high = self.profile.extranonce2_sizes
        if low <= size <= high:
            return True
        self._refuse(f"extranonce2_size {size} outside {low}..{high}")
        return False

    def _set_mask(self, mask: int) -> None:
        self.version_mask = mask & self.profile.rollable_mask
        self.masks.append(mask)
        self._generation += 1

    def _set_difficulty(self, difficulty: float) -> None:
        floor = self.profile.minimum_difficulty or 0.0  # a hard limit of the hardware
        self.difficulty = max(difficulty, floor)
        self.target = work.difficulty_to_target(self.difficulty)
        self._generation += 1  # applies to subsequent work

    def _on_set_difficulty(self, difficulty: float) -> None:
        p = self.profile
        if self.min_difficulty_honoured and p.minimum_difficulty is not None \
                and difficulty < p.minimum_difficulty:
            self.violations["difficulty below the minimum-difficulty it accepted"] += 1
        queue = self._difficulty_queue
        if p.difficulty_applies == "now":
            self._set_difficulty(difficulty)
        elif p.difficulty_applies == "next_notify" or not queue:
            queue[:] = [difficulty]
        else:  # cgminer's "stacked": this one counts from the notify after the next
            queue[1:] = [difficulty]

    def _on_method(self, msg: messages.Message, now: float) -> None:
        method = msg.method
        params = msg.params or []
        if method == "mining.notify":
            notify = messages.parse_notify(params)
            if self._difficulty_queue:
                self._set_difficulty(self._difficulty_queue.pop(0))
            if self._pending_extranonce is not None:
                # NiceHash's rule: a new extranonce applies from the next notify on
                self.extranonce1, self.extranonce2_size = self._pending_extranonce
                self._pending_extranonce = None
                self._generation += 1
            if notify.clean_jobs:
                self._generation += 1  # abandon the work in progress
            self.job = notify
            self.latest_coinb1 = notify.coinb1
            self.notifies.append((now, notify.job_id, notify.coinb1, notify.clean_jobs))
        elif method == "mining.set_difficulty":
            self._on_set_difficulty(messages.parse_difficulty(params))
        elif method == "mining.set_version_mask":
            self._set_mask(messages.parse_version_mask(params[0] if params else None))
        elif method == "mining.set_extranonce":
            self.set_extranonce_received += 1
            sub = messages.parse_set_extranonce(params)
            if self.extranonce_subscribed:
                if self._extranonce2_fits(sub.extranonce2_size):
                    self._pending_extranonce = (sub.extranonce1, sub.extranonce2_size)
            elif self.profile.configure_subscribe_extranonce:
                self.violations["set_extranonce the rig was not subscribed to"] += 1
        elif method == "client.reconnect":
            self.reconnect_requests += 1
            self._on_reconnect(params)
        elif method == "client.show_message":
            self.shown_messages.append(str(params[0]) if params else "")
        elif msg.id is not None:
            if method == "client.get_version":
                self._write(messages.response(msg.id, self.profile.user_agent))
            elif method == "mining.ping":
                self._write(messages.response(msg.id, "pong"))
            else:
                self._write(messages.error_response(msg.id, errors.METHOD_NOT_FOUND))

    def _on_reconnect(self, params: list[Any]) -> None:
        host = params[0] if params and isinstance(params[0], str) and params[0] else self.host
        port = self.port
        if len(params) > 1:
            try:
                port = int(params[1])
            except (TypeError, ValueError):
                pass
        wait = 0.0
        if len(params) > 2 and isinstance(params[2], (int, float)):
            wait = min(max(float(params[2]), 0.0), 60.0)
        self._reconnect_to = (host, port, wait)
        self.close(on_purpose=True)

    def close(self, on_purpose: bool = True) -> None:
        """Close this connection; ``on_purpose`` keeps it out of the disconnect count."""
        self._closing_on_purpose = on_purpose
        if self.transport is not None:
            self.transport.close()

    # --- the connection loop ------------------------------------------------------------------

    async def run(self, sem: asyncio.Semaphore) -> None:
        """Dial, stay connected, redial after drops (with backoff) until stopped."""
        loop = asyncio.get_running_loop()
        fleet = self.fleet
        delay = fleet.reconnect_delay
        first = True
        while not self._stopping:
            try:
                if first:
                    async with sem, asyncio.timeout(fleet.connect_timeout):
                        await loop.create_connection(lambda: self, self.host, self.port,
                                                     local_addr=self.source)
                else:
                    async with asyncio.timeout(fleet.connect_timeout):
                        await loop.create_connection(lambda: self, self.host, self.port,
                                                     local_addr=self.source)
            except (OSError, TimeoutError) as exc:
                self.connect_failures += 1
                log.debug("%s: connect to %s:%d failed: %s", self.worker, self.host, self.port,
                          exc)
                first = False
                self._first_attempt.set()
                fleet._changed_now()
                if not fleet.auto_reconnect:
                    return
                await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))
                delay = min(delay * 2, fleet.max_reconnect_delay)
                continue
            first = False
            self._first_attempt.set()
            delay = fleet.reconnect_delay
            await self._closed.wait()
            if self._stopping:
                return
            if self._reconnect_to is not None:
                self.host, self.port, wait = self._reconnect_to
                self._reconnect_to = None
                if wait:
                    await asyncio.sleep(wait)
                continue
            if not fleet.auto_reconnect:
                return
            await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))

    # --- mining -------------------------------------------------------------------------------

    def can_mine(self) -> bool:
        return (self.connected and self.authorized and self.subscribed and self.job is not None
                and self.fleet.mining and not self._stopping)

    async def mine(self) -> None:
        """Find and submit shares at about one per ``share_interval``, or at the pace of
        ``hashrate`` at the current difficulty (jittered)."""
        fleet = self.fleet
        while not self._stopping:
            if fleet.hashrate is None:
                interval = fleet.share_interval
            else:
                # the pace depends on the difficulty: wait for the pool's before timing a share
                if not await self._until_can_mine():
                    return
                interval = self.difficulty * 2**32 / fleet.hashrate
            await asyncio.sleep(interval * self.rng.uniform(0.5, 1.5))
            if not await self._until_can_mine():
                return
            share = await self._scan()
            if share is not None and self.can_mine():
                self._submit(*share)

    async def _until_can_mine(self) -> bool:
        """Wait until connected, authorized and holding a job; False once stopping."""
        while not self.can_mine():
            if not self.idle:
                self.idle = True
                self.fleet._changed_now()
            self._wake.clear()
            try:
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._stopping:
                return False
        self.idle = False
        return True

    async def _scan(self) -> tuple[str, bytes, int, int, int | None] | None:
        """Real double-SHA256 over nonces until a hash meets the target; None if abandoned."""
        job = self.job
        assert job is not None
        gen = self._generation
        target = self.target
        limit = self.fleet.scan_limit
        expected = (1 << 256) / (target + 1)
        if expected > HOPELESS_FACTOR * limit:
            self.hopeless_attempts += 1
            if self.hopeless_attempts == 1:
                log.warning("%s: difficulty %g is far too high for a simulated rig",
                            self.worker, self.difficulty)
            return None
        e2 = self.rng.randbytes(self.extranonce2_size)
        coinbase_hash = work.dsha256(job.coinb1 + self.extranonce1 + e2 + job.coinb2)
        root = work.merkle_root(coinbase_hash, job.merkle_branch)
        bits: int | None = None
        version = job.version
        mask = self.version_mask
        if not mask and self.profile.unnegotiated_mask:
            mask = self.profile.unnegotiated_mask  # rolls on every share, negotiated or not
            roll = True
        else:
            roll = bool(mask) and self.rng.random() < 0.5
        if roll:
            bits = self.rng.getrandbits(32) & mask
            if not bits:
                bits = mask & -mask  # roll at least one bit
            version = work.rolled_version(job.version, bits, mask)
        header = work.build_header(version, work.prevhash_to_header(job.prevhash), root,
                                   job.ntime, job.nbits, 0)
        midstate = _sha256(header[:64])
        tail = header[64:76]
        start = self.rng.getrandbits(32)
        done = 0
        while done < limit:
            end = min(done + SCAN_CHUNK, limit)
            for i in range(done, end):
                nonce = (start + i) & 0xFFFFFFFF
                h = midstate.copy()
                h.update(tail + _pack_nonce(nonce))
                digest = _sha256(h.digest()).digest()
                if int.from_bytes(digest, "little") <= target:
                    return job.job_id, e2, job.ntime, nonce, bits
            done = end
            await asyncio.sleep(0)
            if self._generation != gen or not self.can_mine():
                return None
        return None

    def _submit(self, job_id: str, e2: bytes, ntime: int, nonce: int, bits: int | None) -> None:
        params: list[Any] = [self.worker, job_id, e2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
        if bits is not None:
            params.append(f"{bits:08x}")
        line = self._request("share", "mining.submit", params)
        self.pending[self._next_id - 1] = (time.monotonic(), job_id)
        self.submitted += 1
        self._write(line)
        self.fleet._changed_now()

    # --- views --------------------------------------------------------------------------------

    def on_job_with(self, tag: bytes) -> bool:
        """Whether the rig's latest job came from the pool whose tag is in coinb1."""
        return self.latest_coinb1 is not None and tag in self.latest_coinb1
