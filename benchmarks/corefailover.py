"""The one-upstream-connection-per-rig failover in parts, each alone in a process: the
sans-I/O core's calls (``measure``), and the glue's burst of pool dials (``dial_burst``).

The core (``proxy.core``) does no I/O: the glue hands it each transport event in one call,
from one event loop callback, so the time a call takes is time the event loop is held.
Here N rigs and two pools are driven through the core's entry points without sockets (as
``tests/core/harness.py`` does), every rig on its own primary connection
(``extranonce_prefix_size = 0``), then every primary connection is reset:

- ``fail_ms``: the call reporting the first lost primary connection. It fails the pool,
  plans every rig's move to the backup, closes the first 256 of its N-1 other connections
  and makes the first 500 moves (dialing for them); the rest are made a batch per run of
  the core's timers. It is the call that stalled the loop for 1.6 s at 3,200 rigs before
  the core split;
- ``closes_ms``: the N-1 other reports of a lost primary connection, summed (the glue
  delivers them in one pass of the loop after it aborted those transports);
- ``backup_call_max_ms`` / ``backup_calls_ms``: the backup's new connections, each one
  call when it connects and one with the pool's handshake answers and job, after which the
  rig on it has the backup's job: the longest call and the sum;
- ``core_ms``: the sum of all of it, the core's CPU from the reset until every rig holds
  the backup's job (counted at the rigs: the backup's job in the bytes each rig was sent).

Left out: the glue's own work per connection (sockets, transports, one task per dial) and
the network; the ``per-rig`` failover phase measures the whole proxy process on sockets.
Each size runs in a fresh spawned process; the garbage collector runs as in the proxy
(``proxy.net.service.tune_gc``: raised thresholds, start-up objects frozen), after one full
collection just before the reset, so a collection in the measured calls is one the
failover's own allocations triggered.  The core moves a plan's rigs a batch per run of its
timers (``MOVE_BATCH``) and closes the failed pool's other connections a batch per run
(``CLOSE_BATCH``); each run is timed as a call (``move_batches`` of them).

``dial_burst``: the glue's side of the same moment. The core's failover call asks the glue
(``proxy.net.client.Dialer``) for N dials at once; here the real Dialer, on uvloop, dials N
connections from one callback to a pool process that accepts them, for a stub core that
writes one request per connection when it is up. The watchdog of ``benchmarks.loopwatch``
in this loop gives the longest loop pass (``longest_pass_ms``, with this process's CPU in
it) until every connection is up: the glue's cost of the dials, without any of the core's.
N sockets fit this process's open-files limit, so N is the full size.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from proxy.config import load_dict
from proxy.core.coordinator import ProxyCore

from .common import raise_nofile, set_pdeathsig
from .loopwatch import LoopWatch, read_stalls
from .poolproc import EXTRANONCE1_SIZE, make_job

POOL_E2_SIZE = 8
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.encode
_perf = time.perf_counter


def connections(pool: Any) -> list[Any]:
    """A pool's connections (the core's ``PoolState.connections``)."""
    return list(pool.connections.values())


class CoreIO:
    """What the core asks of the glue: dials are only noted, the rest is nothing to do."""

    def __init__(self) -> None:
        self.dialed: list[Any] = []

    def dial(self, conn: Any) -> None:
        self.dialed.append(conn)

    def close_pool(self, conn: Any) -> None:
        pass

    def wake(self, at: float) -> None:
        pass


class PoolEnd:
    """The pool's end of every connection the core dials to it: answers the handshake
    (configure, subscribe, authorize), then sends a difficulty and its job, which carries
    the pool's name in coinb1."""

    def __init__(self, name: str, difficulty: float) -> None:
        self.tag = name.encode().hex().encode()  # the name as a rig sees it in coinb1
        notify = [*make_job(name.encode(), 1, EXTRANONCE1_SIZE, POOL_E2_SIZE), True]
        self.work = (_encode({"id": None, "method": "mining.set_difficulty", "params": [difficulty]})
                     + b"\n" + _encode({"id": None, "method": "mining.notify", "params": notify})
                     + b"\n")
        self.next_e1 = 1

    def answer(self, sent: bytes) -> bytes:
        out = []
        for line in sent.splitlines():
            msg = _decode(line)
            method = msg.get("method")
            if method == "mining.subscribe":
                result: Any = [[], self.next_e1.to_bytes(EXTRANONCE1_SIZE, "big").hex(), POOL_E2_SIZE]
                self.next_e1 += 1
            elif method == "mining.configure":
                result = {"version-rolling": True, "version-rolling.mask": "1fffe000"}
            else:
                result = True
            out.append(_encode({"id": msg["id"], "result": result, "error": None}) + b"\n")
        return b"".join(out) + self.work


class Rig:
    """One rig: subscribes and authorizes, keeps the last bytes that carried a job."""

    __slots__ = ("session", "job_bytes", "closed")

    def __init__(self, core: ProxyCore, index: int, now: float) -> None:
        self.job_bytes = b""
        self.closed = False
        self.session = core.rig_connected(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}:4028",
                                          self._write, self._close, now)
        core.rig_data(self.session, b'{"id":1,"method":"mining.subscribe","params":["benchrig/1.0"]}\n'
                      b'{"id":2,"method":"mining.authorize","params":["bench.%d","x"]}\n' % index, now)

    def _write(self, data: bytes) -> None:
        if b'"mining.notify"' in data:
            self.job_bytes = data

    def _close(self) -> None:
        self.closed = True


class Farm:
    """A core with a primary and a backup pool, and N rigs, each on its own connection."""

    def __init__(self, rigs: int, difficulty: float) -> None:
        self.now = 1000.0
        self.io = CoreIO()
        self.core = ProxyCore(load_dict({
            "proxy": {"extranonce_prefix_size": 0, "extranonce2_size": 4, "failback_hold_s": 3600.0,
                      "max_requests_per_s": 1_000_000.0},
            "pools": [{"name": name, "url": f"stratum+tcp://127.0.0.1:{i + 1}", "user": "bench",
                       "priority": i} for i, name in enumerate(("primary", "backup"))],
        }), self.io, self.now)
        self.pools = {name: PoolEnd(name, difficulty) for name in ("primary", "backup")}
        self.served = 0
        self.serve_dials()  # each pool's warm connection
        self.rigs = []
        for i in range(rigs):
            self.rigs.append(Rig(self.core, i, self.now))
            self.serve_dials()  # the rig's own connection

    def serve_dials(self) -> list[float]:
        """Connect and answer every connection dialed since the last call; each core call's
        seconds."""
        calls = []
        core, now = self.core, self.now
        while self.served < len(self.io.dialed):
            conn = self.io.dialed[self.served]
            self.served += 1
            sent: list[bytes] = []
            t0 = _perf()
            core.pool_connected(conn, sent.append, now)
            t1 = _perf()
            reply = self.pools[conn.pool.name].answer(b"".join(sent))
            t2 = _perf()
            core.pool_data(conn, reply, now)
            calls += [t1 - t0, _perf() - t2]
        return calls

    def on(self, pool: str) -> int:
        tag = self.pools[pool].tag
        return sum(1 for rig in self.rigs if tag in rig.job_bytes)

    def reset_primary(self) -> dict[str, Any]:
        primary = connections(self.core.pools["primary"])
        dialed_before = len(self.io.dialed)
        reason = "connection reset by pool"
        gc.collect()
        t0 = _perf()
        self.core.pool_closed(primary[0], reason, self.now)
        t1 = _perf()
        for conn in primary[1:]:
            self.core.pool_closed(conn, reason, self.now)
        t2 = _perf()
        calls = self.serve_dials()
        batches = 0
        # the core moves a batch of rigs (and closes a batch of the failed pool's other
        # connections) per run of its timers
        while self.core.mover.pending or self.core.upstreams.doomed:
            t3 = _perf()
            self.core.tick(self.now)
            calls.append(_perf() - t3)
            batches += 1
            calls += self.serve_dials()
        fail, closes = t1 - t0, t2 - t1
        return {"primary_connections": len(primary), "fail_ms": round(fail * 1000, 2),
                "closes_ms": round(closes * 1000, 2),
                "backup_connections": len(self.io.dialed) - dialed_before, "move_batches": batches,
                "backup_call_max_ms": round(max(calls, default=0.0) * 1000, 3),
                "backup_calls_ms": round(sum(calls) * 1000, 2),
                "core_ms": round((fail + closes + sum(calls)) * 1000, 2)}


def measure(rigs: int, difficulty: float) -> dict[str, Any]:
    from proxy.net.service import tune_gc

    tune_gc()
    t0 = time.monotonic()
    farm = Farm(rigs, difficulty)
    setup_s = time.monotonic() - t0
    on_primary = farm.on("primary")
    result = farm.reset_primary()
    return {"rigs": rigs, "setup_s": round(setup_s, 1), "rigs_on_primary_before": on_primary,
            **result, "rigs_on_backup": farm.on("backup"),
            "rigs_closed": sum(rig.closed for rig in farm.rigs)}


class _PoolConfig:
    tls = False
    ca_file = ""
    tls_verify = True


class _Pool:
    config = _PoolConfig()


class DialedConnection:
    """What the Dialer reads of a pool connection."""

    def __init__(self, conn_id: int, port: int) -> None:
        self.conn_id = conn_id
        self.host = "127.0.0.1"
        self.port = port
        self.pool = _Pool()
        self.alive = True


class StubCore:
    """The core's entry points the Dialer calls: count, and write one request when up."""

    def __init__(self) -> None:
        self.connected = self.closed = 0

    def pool_connected(self, conn: Any, send: Any, now: float) -> None:
        self.connected += 1
        send(b'{"id":1,"method":"mining.subscribe","params":["stratum-proxy/bench"]}\n')

    def pool_data(self, conn: Any, data: bytes, now: float) -> None:
        pass

    def pool_closed(self, conn: Any, reason: str, now: float) -> None:
        self.closed += 1


async def dial_burst(dials: int, port: int, connect_timeout: float = 5.0) -> dict[str, Any]:
    from proxy.net.client import Dialer

    loop = asyncio.get_running_loop()
    stalls = Path(tempfile.mkdtemp(prefix="bench-dials-")) / "stalls.txt"
    LoopWatch(str(stalls)).start()
    core = StubCore()
    dialer = Dialer(loop, connect_timeout)
    dialer.core = core  # type: ignore[assignment]
    conns = [DialedConnection(i, port) for i in range(dials)]
    await asyncio.sleep(0.1)
    gc.collect()
    start = time.monotonic()


    def burst() -> None:  # what the core's failover call asks for, in one callback
        for conn in conns:
            dialer.dial(conn)  # type: ignore[arg-type]

    loop.call_soon(burst)
    while core.connected + core.closed < dials and time.monotonic() - start < 2 * connect_timeout:
        await asyncio.sleep(0.005)
    done = time.monotonic()
    await asyncio.sleep(0.05)
    passes = read_stalls(stalls, start, time.monotonic())
    await dialer.aclose()
    return {"dials": dials, "connected": core.connected, "failed": core.closed,
            "all_up_ms": round((done - start) * 1000, 1), "longest_pass_ms": passes["stall_ms"],
            "longest_pass_cpu_ms": passes["stall_cpu_ms"], "passes_over_10ms": passes["stalls_over_10ms"],
            "cpu_us_per_dial": round((passes["stall_cpu_ms"] or 0.0) * 1000 / dials, 1)}


def core_main(conn: Any, rigs: int, difficulty: float, pool_port: int = 0) -> None:
    """Spawned child: one size, a fresh heap; sends ("ok", result) when done: the core's
    failover calls, or with ``pool_port`` the glue's dial burst to that port."""
    set_pdeathsig()
    try:
        if pool_port:
            import uvloop

            raise_nofile(rigs + 200)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(dial_burst(rigs, pool_port))
        else:
            result = measure(rigs, difficulty)
    except Exception as exc:  # reported by the harness as a failed child
        conn.send(("error", repr(exc)))
        return
    conn.send(("ok", result))
