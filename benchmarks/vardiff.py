"""Scenario 5, vardiff: 10,000 rigs, each at its own difficulty, against a vardiff pool.

The proxy runs with its default settings (extranonce layout "auto": a 2-byte prefix and
extranonce2_size 4 on a pool of extranonce2_size 8, so every rig shares one upstream
connection) and gives each rig its own difficulty, aiming at one share per
``rig_share_interval_s`` (5 s) and never above the pool connection's. The pool is a
validating ``SimPool`` with per-connection vardiff (ckpool's rules): it raises that one
connection's difficulty to the whole farm's hashrate, starting from ``POOL_START``. The
first rigs start there too; rigs that connect after the pool's first retarget start at its
raised difficulty. Either way the proxy has to move each rig to its own.

Each rig hashes at a fixed true rate (log-uniform in ``HASHRATE`` H/s, a fixed seed) at
the difficulty the proxy last sent it (applied from the next notify, as firmware does).
When its shares come is drawn, not hashed out in real time: each hash meets the target
with probability p = (target + 1) / 2^256, so at H hashes/s shares come as a Poisson
process of rate H * p (a real rig does ~10^14 hashes/s: the time to the next share is
exponential; whole hashes at 2-8 H/s would lose half a hash at every restart). A new job
or difficulty starts a new draw from that moment (memoryless: nothing lost or gained).
Every share sent is real all the same: when it is due, the rig grinds nonces on its job
until one meets its target (double-SHA256, 1/p hashes on average, ~16 at 2^-28), so the
proxy validates each one in full and the pool accepts the ones it forwards. A share that
fell due before a notify was read (this loop was busy) is still sent, on its old job.

Measured over a window after a warm-up: the proxy's CPU (utime + stime from /proc) per rig
per hour, the rig shares it validated and accepted per second, the shares it forwarded
per second, the rig difficulties (``/api/v1/rigs``) against the pool connection's
(``/api/v1/pools`` and the sim pool's own), each rig's hashrate as the proxy reports it
against its true rate, rejects and disconnects. The rigs, the pool and the proxy are three
processes; the rigs are one asyncio protocol each, on uvloop, in this one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import struct
import time
from array import array
from collections import Counter
from typing import Any

from proxy.stratum import errors, messages, work

from .common import (
    HarnessError,
    ProxyApi,
    cpu_seconds,
    md_table,
    proxy_config,
    quantile,
    raise_nofile,
    rss_kib,
    self_cpu_seconds,
    take_lines,
    write_json,
)
from .loadgen import header_midstate, open_connections
from .poolproc import sim_pools_main

USE_UVLOOP = True
HASHRATE = (2.0, 8.0)  # H/s per rig, log-uniform: ~2^-29..2^-27 at one share per 5 s
SEED = 14
POOL_START = 2.0 ** -30  # the pool's first difficulty for a connection (and its floor)
POOL_MAX = 2.0 ** -8  # the pool's vardiff ceiling: far above the farm's 2^-15 or so
JOBS_CACHED = 64  # notify lines parsed once for the whole fleet
MAX_GRIND = 1 << 22  # hashes to find one share (~5 s of CPU): far beyond any rig here
ID_BASE = 1000
DIFF1 = 2 ** 32
_sha256 = hashlib.sha256
_pack = struct.Struct("<I").pack


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    smoke = ctx.smoke
    return {"rigs": a.rigs or (200 if smoke else 10_000),
            "warmup_s": 3.0 if smoke else 60.0,
            "measure_s": a.duration or (5.0 if smoke else 60.0),
            "hashrate_h_s": list(HASHRATE), "seed": SEED,
            "pool": "validating sim pool with per-connection vardiff (proxy.sim.pool)",
            "pool_start_difficulty": POOL_START, "pool_max_difficulty": POOL_MAX,
            # a pool's new job every 30 s; in smoke mode sooner, so that shares are judged
            # at the raised difficulty (until then the first job's lower one counts: ckpool)
            "pool_job_interval_s": 2.0 if smoke else 30.0,
            "pool_extranonce2_size": 8, "proxy_settings": "defaults (layout auto)"}


# --- the rigs ----------------------------------------------------------------------------------

class HashingRig(asyncio.Protocol):
    """One rig: subscribes, authorizes, and mines at its true hashrate at the difficulty
    the proxy gives it (see the module docstring for how the hashing is simulated)."""

    def __init__(self, fleet: Fleet, index: int, hashrate: float) -> None:
        self.fleet = fleet
        self.index = index
        self.hashrate = hashrate
        self.worker = f"vd.{index:05d}"
        self.wprefix = b'"method":"mining.submit","params":["' + self.worker.encode() + b'","'
        self.transport: Any = None
        self.buf = b""
        self.ext1 = b""
        self.e2 = b""
        self.authorized = False
        self.sent_difficulty: float | None = None  # the last set_difficulty, from the next job
        self.difficulty = 0.0
        self.target = 0
        self.job: messages.Notify | None = None  # the last notify
        self.work_job: messages.Notify | None = None  # the job being mined
        self.share_rate = 0.0  # shares/s at the target: hashrate * P(a hash meets it)
        self.job_key: tuple[str, bytes] | None = None
        self.mid: Any = None
        self.tail = b""
        self.jprefix = b""  # the submit line up to the ntime, for the job held
        self.ntime = b""
        self.nonce = 0
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0.0  # loop time the rig's hashing has reached
        self.next_id = ID_BASE
        self.pending: dict[int, float] = {}  # id -> difficulty it was mined at
        self.started_at: float | None = None  # first job: the true rate applies from here
        self.credited = 0.0  # difficulty of the accepted shares (what an ideal meter sees)
        self.accepted = 0
        self.difficulties: list[tuple[float, float]] = []  # (loop time, set_difficulty)
        self.submits_at: list[float] = []  # loop time of every share submitted

    # --- asyncio.Protocol ---

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(messages.request(1, "mining.subscribe", ["benchrig/1.0"])
                        + messages.request(2, "mining.authorize", [self.worker, "x"]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop()
        if not self.fleet.closing:
            self.fleet.disconnects += 1

    def data_received(self, data: bytes) -> None:
        chunk, self.buf = take_lines(self.buf, data)
        jobs = self.fleet.jobs
        for line in chunk.split(b"\n"):
            if not line:
                continue
            job = jobs.get(line)  # the proxy writes one job line to every rig
            if job is not None:
                self._on_notify(job)
                continue
            try:
                msg = messages.decode(line)
            except messages.BadMessage:
                self.fleet.bad_lines += 1
                continue
            if msg.method == "mining.notify":
                if len(jobs) >= JOBS_CACHED:
                    jobs.clear()
                job = jobs[line] = messages.parse_notify(msg.params)
                self._on_notify(job)
            else:
                self._on_message(msg)

    # --- messages ---

    def _on_message(self, msg: messages.Message) -> None:
        fleet = self.fleet
        if msg.method is None:
            d = self.pending.pop(msg.id, None) if isinstance(msg.id, int) else None
            if d is not None:
                if msg.result is True:
                    self.accepted += 1
                    self.credited += d
                    fleet.accepted += 1
                else:
                    err = msg.error
                    code = err[0] if isinstance(err, list) and err else "?"
                    fleet.rejected[code] += 1
            elif msg.id == 1 and msg.result is not None:
                sub = messages.parse_subscribe_result(msg.result)
                self.ext1 = sub.extranonce1
                self.e2 = self.index.to_bytes(8, "big")[-sub.extranonce2_size:]
                fleet.layouts[(len(sub.extranonce1), sub.extranonce2_size)] += 1
            elif msg.id == 2:
                self.authorized = msg.result is True
                self._start()
            return
        if msg.method == "mining.set_difficulty":
            d = messages.parse_difficulty(msg.params)
            self.sent_difficulty = d
            self.difficulties.append((fleet.loop.time(), d))
            fleet.set_difficulty += 1
        else:
            fleet.other_methods[msg.method] += 1

    def _on_notify(self, job: messages.Notify) -> None:
        fleet = self.fleet
        if self.job is None or job.job_id != self.job.job_id:
            # a new job: when this rig read it, for the spread over the fleet
            now = fleet.loop.time()
            seen = fleet.job_seen.get(job.job_id)
            if seen is None:
                fleet.job_seen[job.job_id] = [now, now, 1]
            else:
                seen[1] = now
                seen[2] += 1
        self.job = job
        fleet.notifies += 1
        self._start()

    def _start(self) -> None:
        """Mine the job held, at the difficulty last sent (on every notify)."""
        if not (self.authorized and self.job is not None and self.sent_difficulty and self.e2):
            return
        if self.fleet.stopped:
            return
        now = self.fleet.loop.time()
        if self.started_at is None:
            self.started_at = now
            self.fleet.working += 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            if self.due <= now:
                # found before this notify was read (this loop was busy): a rig sends it
                self._submit()
        self.work_job = self.job
        if self.sent_difficulty != self.difficulty:
            self.difficulty = self.sent_difficulty
            self.target = work.difficulty_to_target(self.difficulty)
            self.share_rate = self.hashrate * (self.target + 1) / 2 ** 256
        self.due = now
        self._schedule()

    def _schedule(self) -> None:
        """The timer for the next share, an exponential time at this rig's share rate."""
        self.due += self.fleet.rng.expovariate(self.share_rate)
        self.timer = self.fleet.loop.call_at(self.due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        fleet = self.fleet
        if fleet.lags is not None:
            fleet.lags.append(fleet.loop.time() - self.due)
        self._submit()
        self._schedule()

    def _submit(self) -> None:
        """Grind nonces on the job being mined until one meets the target; submit it."""
        fleet = self.fleet
        job = self.work_job
        assert job is not None
        if self.job_key != (job.job_id, self.ext1):
            self.job_key = (job.job_id, self.ext1)
            self.mid, self.tail = header_midstate(job, self.ext1, self.e2)
            self.ntime = b'","' + f"{job.ntime:08x}".encode() + b'","'
            self.jprefix = self.wprefix + job.job_id.encode() + b'","' + self.e2.hex().encode()
        mid, tail, target = self.mid, self.tail, self.target
        nonce = self.nonce
        n = 0
        while True:
            h = mid.copy()
            h.update(tail + _pack(nonce))
            nonce = (nonce + 1) & 0xFFFFFFFF
            n += 1
            if int.from_bytes(_sha256(h.digest()).digest(), "little") <= target:
                break
            if n >= MAX_GRIND:
                raise HarnessError(f"{self.worker}: no share in {n} hashes at difficulty "
                                   f"{self.difficulty:g}")
        fleet.hashes += n
        self.nonce = nonce
        msg_id = self.next_id
        self.next_id += 1
        self.pending[msg_id] = self.difficulty
        self.submits_at.append(self.due)
        self.transport.write(b'{"id":%d,' % msg_id + self.jprefix + self.ntime
                             + b'%08x"]}\n' % ((nonce - 1) & 0xFFFFFFFF))
        fleet.submitted += 1

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Fleet:
    """N hashing rigs against the proxy, with the farm's counters."""

    def __init__(self, host: str, port: int, hashrates: list[float]) -> None:
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.rigs = [HashingRig(self, i, h) for i, h in enumerate(hashrates)]
        self.closing = False
        self.stopped = False
        self.working = 0  # rigs that got a job and started hashing
        self.submitted = 0
        self.accepted = 0
        self.rejected: Counter[Any] = Counter()
        self.disconnects = 0
        self.set_difficulty = 0
        self.notifies = 0
        self.hashes = 0
        self.rng = random.Random(SEED)
        self.jobs: dict[bytes, messages.Notify] = {}  # notify line -> parsed, for every rig
        self.job_seen: dict[str, list[Any]] = {}  # job id -> [first read, last read, rigs]
        self.connected_at = math.inf  # loop time every rig had its first job
        self.stopped_at = math.inf
        self.other_methods: Counter[str] = Counter()
        self.bad_lines = 0
        self.layouts: Counter[tuple[int, int]] = Counter()  # (extranonce1, extranonce2) sizes
        self.lags: array | None = None  # share timer lateness, seconds, while recording

    async def connect(self, timeout: float) -> float:
        t0 = time.monotonic()
        async with asyncio.timeout(timeout):
            await open_connections(self.host, self.port, self.rigs)
            while self.working < len(self.rigs):
                await asyncio.sleep(0.05)
        self.connected_at = self.loop.time()
        return time.monotonic() - t0

    def counters(self) -> dict[str, Any]:
        return {"submitted": self.submitted, "accepted": self.accepted,
                "rejected": sum(self.rejected.values()), "hashes": self.hashes,
                "set_difficulty": self.set_difficulty, "notifies": self.notifies}

    def pending(self) -> int:
        return sum(len(r.pending) for r in self.rigs)

    async def stop_mining(self, drain_timeout: float) -> int:
        """Stop every rig's hashing, wait for the answers still owed; the unanswered count."""
        self.stopped = True
        self.stopped_at = self.loop.time()
        for rig in self.rigs:
            rig.stop()
        deadline = self.loop.time() + drain_timeout
        while self.pending() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.pending()

    def close(self) -> None:
        self.closing = True
        for rig in self.rigs:
            rig.stop()
            if rig.transport is not None:
                rig.transport.abort()


# --- the run -----------------------------------------------------------------------------------

def hashrates(n: int) -> list[float]:
    rng = random.Random(SEED)
    lo, hi = math.log(HASHRATE[0]), math.log(HASHRATE[1])
    return [math.exp(rng.uniform(lo, hi)) for _ in range(n)]


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    n = p["rigs"]
    nofile = raise_nofile(n + 2000)  # before the proxy starts: it inherits the limit
    if nofile < n + 200:
        ctx.log(f"vardiff: open-files limit {nofile} is too low for {n} rigs; using {nofile - 500}")
        n = p["rigs"] = max(10, nofile - 500)
    p["nofile_limit"] = nofile
    procs = ctx.procs
    pools, ports = await procs.start_child(sim_pools_main, [
        {"name": "pool", "difficulty": POOL_START, "extranonce2_size": p["pool_extranonce2_size"],
         "job_interval": p["pool_job_interval_s"], "vardiff": True, "vardiff_min": POOL_START,
         "vardiff_max": POOL_MAX}])
    config = proxy_config([{"name": "pool", "url": f"stratum+tcp://127.0.0.1:{ports['pool']}",
                            "user": "bench"}], api=True)
    for key in ("extranonce2_size", "extranonce_prefix_size", "max_requests_per_s"):
        del config["proxy"][key]  # the proxy's defaults: auto layout, per-rig request limit
    proxy, proxy_port, api_port = await procs.start_proxy(config)
    if api_port is None:
        raise HarnessError("the proxy did not start its API")
    async with ProxyApi(api_port) as api:
        for _ in range(200):
            if (await api.get("/healthz")).get("pool_connections_ready"):
                break
            await asyncio.sleep(0.05)
        else:
            raise HarnessError("the proxy never got its pool connection ready")
        fleet = Fleet("127.0.0.1", proxy_port, hashrates(n))
        try:
            return await _measure(ctx, p, api, fleet, pools, proxy.pid)
        finally:
            fleet.close()


async def _measure(ctx: Any, p: dict[str, Any], api: ProxyApi, fleet: Fleet, pools: Any,
                   pid: int) -> dict[str, Any]:
    n = p["rigs"]
    true_total = sum(r.hashrate for r in fleet.rigs)
    ctx.log(f"vardiff: {n:,} rigs, {true_total:,.0f} H/s in all ({HASHRATE[0]:g}-{HASHRATE[1]:g} "
            f"H/s each), pool vardiff from difficulty 2^{math.log2(POOL_START):g}; warm-up "
            f"{p['warmup_s']:g} s, measured {p['measure_s']:g} s")
    cpu_start = cpu_seconds(pid)
    setup_s = await fleet.connect(60.0 + n / 200)
    cpu_connected = cpu_seconds(pid)
    ctx.log(f"  {n:,} rigs connected and hashing in {setup_s:.1f} s (proxy CPU "
            f"{cpu_connected - cpu_start:.2f} s)")
    await asyncio.sleep(p["warmup_s"])
    before = after = await _snapshot(api, fleet, pools, pid)
    fleet.lags = array("d")
    for step in _steps(p["measure_s"], 15.0):
        await asyncio.sleep(step)
        mark, after = after, await _snapshot(api, fleet, pools, pid)
        w = _window(mark, after, n)
        ctx.log(f"  {w['validated_per_s']:,.0f} shares/s validated, {w['forwarded_per_s']:.2f}/s "
                f"forwarded, proxy CPU {w['proxy_cpu_util']:.0%}, pool difficulty "
                f"{after['pool_difficulty']:.3g}")
    lags = sorted(fleet.lags)
    fleet.lags = None
    window = _window(before, after, n)
    rigs = await api.all_rigs()
    pool_view = (await api.get("/api/v1/pools"))["pools"][0]
    status = await api.get("/api/v1/status")
    sim = (await pools.call("stats"))["pool"]
    unanswered = await fleet.stop_mining(5.0)
    # after the drain every answer is in: the share ledger
    final = await api.get("/api/v1/status")
    final_pool = (await api.get("/api/v1/pools"))["pools"][0]
    final_sim = (await pools.call("stats"))["pool"]
    result: dict[str, Any] = {
        "scenario": "vardiff", "params": p, "rigs": n, "setup_s": round(setup_s, 2),
        "true_hashrate_h_s": round(true_total, 1),
        "layout": {"proxy": status.get("layout"),
                   "rigs": {f"{e1}+{e2}": c for (e1, e2), c in fleet.layouts.items()}},
        "window": window,
        "proxy_rss_kib": rss_kib(pid),
        # pool jobs broadcast to every rig: first to last rig reading it here, ms (the
        # proxy's fan-out plus this loop's own time; shares sent meanwhile may be stale)
        "job_broadcast_read_spread_ms": [round((last - first) * 1000, 1) for first, last, count
                                         in fleet.job_seen.values()
                                         if count == n and first > fleet.connected_at],
        "loadgen_timer_lag_ms": {"p50": _ms(quantile(lags, 0.5)), "p99": _ms(quantile(lags, 0.99)),
                                 "max": _ms(lags[-1] if lags else None), "count": len(lags)},
    }
    result["difficulty"] = difficulties(rigs, fleet, pool_view, sim)
    result["hashrate"] = hashrate_error(rigs, fleet, fleet.loop.time())
    result["health"] = health(fleet, final["counters"], final_sim, final_pool, unanswered)
    result["health"]["rigs_stalled"] = status.get("rigs_stalled")
    result["targeting"] = targeting(rigs, fleet, float(status["rig_share_interval_s"]))
    result["rig_detail"] = str(dump_rigs(ctx.workdir / "rigs.json", fleet, rigs))
    result["bars"] = bars(result)
    ctx.log(summary(result))
    return result


def _steps(total: float, step: float) -> list[float]:
    """The measured window in progress-report steps."""
    out = []
    while total > 1e-9:
        out.append(min(step, total))
        total -= out[-1]
    return out


async def _snapshot(api: ProxyApi, fleet: Fleet, pools: Any, pid: int) -> dict[str, Any]:
    cpu_proxy = cpu_seconds(pid)
    cpu_pool = cpu_seconds(pools.pid)
    cpu_self = self_cpu_seconds()
    t = time.monotonic()
    status = await api.get("/api/v1/status")
    sim = (await pools.call("stats"))["pool"]
    return {"t": t, "cpu_proxy": cpu_proxy, "cpu_pool": cpu_pool, "cpu_self": cpu_self,
            "counters": status["counters"], "fleet": fleet.counters(),
            "pool_accepted": sim["accepted"],
            "pool_difficulty": max((c["difficulty"] for c in sim["conns"]), default=0.0)}


def _window(a: dict[str, Any], b: dict[str, Any], rigs: int) -> dict[str, Any]:
    wall = b["t"] - a["t"]
    cpu = b["cpu_proxy"] - a["cpu_proxy"]
    ca, cb = a["counters"], b["counters"]

    def rate(key: str) -> float:
        return round((cb[key] - ca[key]) / wall, 1)

    return {
        "wall_s": round(wall, 2),
        "proxy_cpu_s": round(cpu, 3),
        "proxy_cpu_util": round(cpu / wall, 4),
        "proxy_cpu_s_per_rig_hour": round(cpu / rigs / wall * 3600, 5),
        "pool_cpu_util": round((b["cpu_pool"] - a["cpu_pool"]) / wall, 4),
        "loadgen_cpu_util": round((b["cpu_self"] - a["cpu_self"]) / wall, 4),
        "submits_per_s": rate("submits"),
        "validated_per_s": rate("accepted"),
        "forwarded_per_s": rate("forwarded"),
        "below_pool_target_per_s": rate("below_pool_target"),
        "rejected_per_s": rate("rejected"),
        "pool_accepted_per_s": round((b["pool_accepted"] - a["pool_accepted"]) / wall, 3),
        "loadgen_submitted_per_s": round((b["fleet"]["submitted"] - a["fleet"]["submitted"]) / wall, 1),
        "loadgen_hashes_per_s": round((b["fleet"]["hashes"] - a["fleet"]["hashes"]) / wall),
        "set_difficulty_per_s": round((b["fleet"]["set_difficulty"] - a["fleet"]["set_difficulty"])
                                      / wall, 2),
        "set_difficulty_per_rig_minute": round((b["fleet"]["set_difficulty"]
                                                - a["fleet"]["set_difficulty"]) / wall * 60 / rigs, 3),
        "proxy_cpu_us_per_share": (round(cpu / (cb["accepted"] - ca["accepted"]) * 1e6, 1)
                                   if cb["accepted"] > ca["accepted"] else None),
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def _diff(v: float | None) -> str:
    """A difficulty as 2^k when it is a power of two (the proxy's are), else 4 digits."""
    if v is None or v <= 0:
        return "-"
    e = math.log2(v)
    return f"2^{e:g}" if e == int(e) else f"{v:.4g} (2^{e:.1f})"


def difficulties(rigs: list[dict[str, Any]], fleet: Fleet, pool_view: dict[str, Any],
                 sim: dict[str, Any]) -> dict[str, Any]:
    """The rigs' difficulties against the pool connection's, as the proxy and the pool see them."""
    values = sorted(float(r["difficulty"]) for r in rigs if r.get("difficulty"))
    pool_proxy = pool_view.get("difficulty")
    sim_diffs = [c["difficulty"] for c in sim["conns"]]
    pool = pool_proxy or (max(sim_diffs) if sim_diffs else None)
    median = quantile(values, 0.5)
    ever = max((d for r in fleet.rigs for _, d in r.difficulties), default=None)
    return {
        "rigs_with_difficulty": len(values),
        "rig_min": values[0] if values else None,
        "rig_median": median,
        "rig_max": values[-1] if values else None,
        "rig_histogram": {_diff(d): c for d, c in sorted(Counter(values).items())},
        "pool_connection": pool_proxy,
        "pool_connections": pool_view.get("connections"),
        "sim_pool_connections": sim_diffs,
        "sim_pool_retargets": sum(c["retargets"] for c in sim["conns"]),
        "pool_over_rig_median": round(pool / median, 1) if pool and median else None,
        "pool_over_rig_max": round(pool / values[-1], 1) if pool and values else None,
        "rigs_above_pool": sum(1 for v in values if pool is not None and v > pool),
        "max_ever_sent_to_a_rig": ever,
        "set_difficulty_per_rig": round(fleet.set_difficulty / max(1, len(fleet.rigs)), 2),
    }


def targeting(rigs: list[dict[str, Any]], fleet: Fleet, interval: float) -> dict[str, Any]:
    """How well each rig's difficulty fits its true hashrate: the share interval it gives,
    and the rigs outside the proxy's own band (0.5 to 2 shares per rig_share_interval_s,
    ``proxy.core.vardiff``'s LOWER_AT and RAISE_AT); and where the rigs started."""
    by_worker = {r.worker: r for r in fleet.rigs}
    gaps = []
    rate = 0.0
    band: Counter[str] = Counter()
    for view in rigs:
        rig = by_worker.get(view["worker"])
        if rig is None or not view.get("difficulty"):
            continue
        gap = view["difficulty"] * DIFF1 / rig.hashrate  # seconds per share, on average
        gaps.append(gap)
        rate += 1 / gap
        per_interval = interval / gap
        band["too_few" if per_interval < 0.5 else "too_many" if per_interval > 2 else "in"] += 1
    gaps.sort()
    first = Counter(r.difficulties[0][1] for r in fleet.rigs if r.difficulties)
    return {
        "rig_share_interval_s": interval,
        "share_interval_s_p10": _round(quantile(gaps, 0.1)),
        "share_interval_s_median": _round(quantile(gaps, 0.5)),
        "share_interval_s_p90": _round(quantile(gaps, 0.9)),
        "rigs_in_band": band["in"],
        "rigs_below_band": band["too_few"],  # difficulty too high for the rig: < 0.5 per interval
        "rigs_above_band": band["too_many"],  # too low: > 2 shares per interval
        # what the rigs send at these difficulties from now on, on average
        "shares_per_s_at_final_difficulties": round(rate, 1),
        "first_difficulty": {_diff(d): c for d, c in sorted(first.items())},
    }


def dump_rigs(path: Any, fleet: Fleet, views: list[dict[str, Any]]) -> Any:
    """Every rig in one file (in the scenario's temp dir): its true rate, the difficulties it
    was sent and when, when it submitted (seconds from its first job) and the proxy's view."""
    by_worker = {v["worker"]: v for v in views}
    out = []
    for r in fleet.rigs:
        t0 = r.started_at or 0.0
        v = by_worker.get(r.worker, {})
        out.append({"worker": r.worker, "hashrate": round(r.hashrate, 3),
                    "difficulties": [(round(t - t0, 3), d) for t, d in r.difficulties],
                    "submits": [round(t - t0, 3) for t in r.submits_at], "accepted": r.accepted,
                    "credited": r.credited, "hashing_s": round(fleet.stopped_at - t0, 3),
                    "proxy": {k: v.get(k) for k in ("difficulty", "hashrate", "hashrate_shares",
                                                    "stalled", "last_share_age_s")}})
    write_json(path, {"rigs": out})
    return path


def hashrate_error(rigs: list[dict[str, Any]], fleet: Fleet, now: float) -> dict[str, Any]:
    """|reported / true - 1| per rig from /api/v1/rigs, and what an ideal meter (every
    accepted share's difficulty over the rig's whole time hashing) would get from the same
    shares: the part of the error that is Poisson noise, not the proxy."""
    by_worker = {r.worker: r for r in fleet.rigs}
    errs, ratios, ideal, ideal_ratios, shares = [], [], [], [], []
    reported = true = ideal_work = true_work = 0.0
    for view in rigs:
        rig = by_worker.get(view["worker"])
        if rig is None or rig.started_at is None:
            continue
        ratio = view["hashrate"] / rig.hashrate
        reported += view["hashrate"]
        true += rig.hashrate
        ratios.append(ratio)
        errs.append(abs(ratio - 1))
        shares.append(view["hashrate_shares"])
        elapsed = now - rig.started_at
        if elapsed > 0:
            ideal_ratios.append(rig.credited * DIFF1 / elapsed / rig.hashrate)
            ideal.append(abs(ideal_ratios[-1] - 1))
            ideal_work += rig.credited * DIFF1
            true_work += rig.hashrate * elapsed
    errs.sort()
    ideal.sort()
    shares.sort()
    return {
        "rigs": len(errs),
        "median_abs_error": _round(quantile(errs, 0.5)),
        "p90_abs_error": _round(quantile(errs, 0.9)),
        "max_abs_error": _round(errs[-1] if errs else None),
        "mean_ratio": _round(sum(ratios) / len(ratios) if ratios else None),
        "ideal_median_abs_error": _round(quantile(ideal, 0.5)),
        "ideal_mean_ratio": _round(sum(ideal_ratios) / len(ideal_ratios) if ideal_ratios else None),
        "ideal_p90_abs_error": _round(quantile(ideal, 0.9)),
        "median_shares_per_rig": quantile(shares, 0.5),
        # the farm: the sum of the rigs' reported hashrates over the sum of the true ones
        "farm_reported_over_true": _round(reported / true if true else None),
        "farm_ideal_over_true": _round(ideal_work / true_work if true_work else None),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def health(fleet: Fleet, counters: dict[str, Any], sim: dict[str, Any], pool_view: dict[str, Any],
           unanswered: int) -> dict[str, Any]:
    """Rejects, disconnects and the share ledger over the whole run (after the drain)."""
    stale = fleet.rejected.get(errors.JOB_NOT_FOUND, 0)
    return {
        "loadgen_submitted": fleet.submitted,
        "loadgen_accepted": fleet.accepted,
        "loadgen_rejected": {str(k): v for k, v in fleet.rejected.items()},
        "rejected_not_stale": sum(fleet.rejected.values()) - stale,
        "unanswered": unanswered,
        "disconnects": fleet.disconnects,
        "bad_lines": fleet.bad_lines,
        "other_methods": dict(fleet.other_methods),
        "proxy_counters": counters,
        "proxy_pool": {k: pool_view.get(k) for k in ("forwarded", "accepted", "rejected", "lost",
                                                      "timeouts", "in_flight")},
        "sim_pool": {k: sim[k] for k in ("accepted", "rejected", "submits", "invalid",
                                         "connections")},
    }


def bars(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Correctness, not speed: the rules of per-rig difficulty, and a farm left undisturbed."""
    d, hl = r["difficulty"], r["health"]
    return [
        {"bar": "no rig's difficulty above the pool connection's", "value": d["rigs_above_pool"],
         "met": d["rigs_above_pool"] == 0},
        {"bar": "0 disconnects, 0 unanswered, 0 rejects other than stale",
         "value": f"{hl['disconnects']} / {hl['unanswered']} / {hl['rejected_not_stale']}",
         "met": hl["disconnects"] == hl["unanswered"] == hl["rejected_not_stale"] == 0},
    ]


def summary(r: dict[str, Any]) -> str:
    w, d, h, hl = r["window"], r["difficulty"], r["hashrate"], r["health"]
    return (f"  {r['rigs']:,} rigs: proxy CPU {w['proxy_cpu_s_per_rig_hour']:.4f} s per rig-hour "
            f"({w['proxy_cpu_util']:.0%} of a core), {w['validated_per_s']:,.0f} shares/s "
            f"validated, {w['forwarded_per_s']:.2f}/s forwarded; rig difficulty median "
            f"{_diff(d['rig_median'])} max {_diff(d['rig_max'])} vs pool {_diff(d['pool_connection'])} "
            f"({d['pool_over_rig_median']}x the median); hashrate error median "
            f"{h['median_abs_error']} p90 {h['p90_abs_error']} (ideal meter "
            f"{h['ideal_median_abs_error']} / {h['ideal_p90_abs_error']}); rejects "
            f"{hl['loadgen_rejected'] or 0}, disconnects {hl['disconnects']}, unanswered "
            f"{hl['unanswered']}")


def markdown(result: dict[str, Any]) -> str:
    p, w, d, h, hl = (result["params"], result["window"], result["difficulty"], result["hashrate"],
                      result["health"])
    tg = result["targeting"]
    rows = [
        ["proxy CPU per rig per hour", f"{w['proxy_cpu_s_per_rig_hour']:.4f} s "
         f"({w['proxy_cpu_util']:.1%} of a core over {w['wall_s']:g} s)"],
        ["proxy CPU per validated share", f"{w['proxy_cpu_us_per_share']} us"],
        ["validated local shares/s (rig shares checked and accepted)", w["validated_per_s"]],
        ["shares/s the rigs send at their final difficulties (true hashrates)",
         tg["shares_per_s_at_final_difficulties"]],
        ["forwarded shares/s (met the pool's target, or the lower one of their job)",
         w["forwarded_per_s"]],
        ["pool accepted/s", w["pool_accepted_per_s"]],
        ["set_difficulty to rigs (retargets)", f"{w['set_difficulty_per_s']}/s, "
         f"{w['set_difficulty_per_rig_minute']} per rig per minute"],
        ["rig difficulty min / median / max",
         " / ".join(_diff(d[k]) for k in ("rig_min", "rig_median", "rig_max"))],
        ["pool connection difficulty (proxy's view; sim pool's)",
         f"{_diff(d['pool_connection'])} ({', '.join(map(_diff, d['sim_pool_connections']))}) "
         f"on {d['pool_connections']} connection(s)"],
        ["pool / rig median, pool / rig max", f"{d['pool_over_rig_median']}x, {d['pool_over_rig_max']}x"],
        ["rigs above the pool's difficulty", d["rigs_above_pool"]],
        ["first difficulty a rig got (rigs)",
         ", ".join(f"{k}: {v:,}" for k, v in tg["first_difficulty"].items())],
        ["share interval the final difficulty gives, p10 / median / p90 (true hashrate)",
         f"{tg['share_interval_s_p10']} / {tg['share_interval_s_median']} / "
         f"{tg['share_interval_s_p90']} s (aim: {tg['rig_share_interval_s']:g} s)"],
        ["rigs in the proxy's band (0.5-2 shares per interval) / too few / too many",
         f"{tg['rigs_in_band']:,} / {tg['rigs_below_band']:,} / {tg['rigs_above_band']:,}"],
        ["hashrate error abs(reported / true - 1), median / p90",
         f"{h['median_abs_error']} / {h['p90_abs_error']} (mean ratio {h['mean_ratio']}; "
         f"farm: sum reported / sum true {h['farm_reported_over_true']})"],
        ["the same for an ideal meter of the same shares",
         f"{h['ideal_median_abs_error']} / {h['ideal_p90_abs_error']} (mean ratio "
         f"{h['ideal_mean_ratio']}; farm {h['farm_ideal_over_true']}; "
         f"{h['median_shares_per_rig']} shares per rig, median)"],
        ["rejects (code:n), disconnects, unanswered, rigs reported stalled",
         f"{', '.join(f'{k}:{v}' for k, v in hl['loadgen_rejected'].items()) or '0'}, "
         f"{hl['disconnects']}, {hl['unanswered']}, {hl['rigs_stalled']}"],
        ["proxy RSS", f"{result['proxy_rss_kib'] / 1024:.1f} MiB"],
        ["pool CPU, load generator CPU", f"{w['pool_cpu_util']:.1%}, {w['loadgen_cpu_util']:.1%}"],
        ["load generator share timer lag p50 / p99 / max",
         " / ".join(f"{result['loadgen_timer_lag_ms'][k]} ms" for k in ("p50", "p99", "max"))],
        ["new pool jobs: first to last rig reading each (fan-out + load generator)",
         ", ".join(f"{x:g} ms" for x in result["job_broadcast_read_spread_ms"]) or "-"],
    ]
    hist = ", ".join(f"{k}: {v:,}" for k, v in d["rig_histogram"].items())
    return "\n".join([
        "## vardiff",
        "",
        f"{result['rigs']:,} rigs hashing {p['hashrate_h_s'][0]:g}-{p['hashrate_h_s'][1]:g} H/s "
        f"each ({result['true_hashrate_h_s']:,.0f} H/s in all), connected in "
        f"{result['setup_s']} s; proxy with default settings (layout "
        f"{', '.join(result['layout']['rigs'])} bytes of extranonce1+extranonce2 at the rigs), "
        f"one vardiff sim pool starting at difficulty {_diff(p['pool_start_difficulty'])}. "
        f"Measured over {w['wall_s']:g} s after a {p['warmup_s']:g} s warm-up.",
        "",
        md_table(["what", "measured"], rows),
        "",
        f"Rig difficulties at the end: {hist}.",
        "",
        md_table(["bar", "value", "met"], [[b["bar"], b["value"], b["met"]] for b in result["bars"]]),
    ]) + "\n"
