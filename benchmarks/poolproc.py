"""Pool processes (a minimal fast answering pool, the validating sim pools) and the rig
fleet process of the failover scenario.

Each runs in its own (spawned) process, controlled through a pipe by the harness.

The **fast pool** is for the latency and throughput scenarios. The validating
``proxy.sim.pool.SimPool`` rebuilds and double-SHA256es every share in Python (tens of
microseconds each), so at 5,000 and more shares/s it, not the proxy, would be what is
measured. The fast pool answers every ``mining.submit`` ``true`` without validation
(the proxy in front of it still validates every share fully), records when each share
arrived (CLOCK_MONOTONIC, system-wide on Linux, keyed by the share's nonce, which the
load generator makes unique), and sends one synthetic, well-formed job.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import time
import traceback
from typing import Any

import msgspec

from .common import set_pdeathsig, take_lines

SUBMIT_RE = re.compile(
    rb'^\{"id":(\d+),"method":"mining\.submit","params":\[(?:"[^"]*",){4}"([0-9a-fA-F]{8})"')
TRUE_TAIL = b',"result":true,"error":null}\n'
EXTRANONCE1_SIZE = 4
_json = msgspec.json.Decoder()
_enc = msgspec.json.encode


def make_job(tag: bytes, job_no: int, e1_size: int, e2_size: int) -> list[Any]:
    """Notify params (without clean flag) shaped like a real job: BIP34 height, tag, P2WPKH."""
    import random

    rng = random.Random(job_no)
    height = 800_000 + job_no
    script_prefix = b"\x03" + height.to_bytes(3, "little") + bytes([len(tag)]) + tag
    coinb1 = (struct.pack("<I", 1) + b"\x01" + b"\x00" * 32 + b"\xff\xff\xff\xff"
              + bytes([len(script_prefix) + e1_size + e2_size]) + script_prefix)
    coinb2 = (b"\xff\xff\xff\xff" + b"\x01" + struct.pack("<Q", 625_000_000)
              + b"\x16\x00\x14" + rng.randbytes(20) + b"\x00\x00\x00\x00")
    branch = [rng.randbytes(32).hex() for _ in range(3)]
    prevhash = rng.randbytes(28) + b"\x00\x00\x00\x00"
    return [f"{job_no:x}", prevhash.hex(), coinb1.hex(), coinb2.hex(), branch, "20000000",
            "1d00ffff", f"{1_700_000_000:08x}"]


class FastPool:
    def __init__(self, difficulty: float, e2_size: int) -> None:
        self.difficulty = difficulty
        self.e2_size = e2_size
        self.job = make_job(b"fastpool", 1, EXTRANONCE1_SIZE, e2_size)
        self.notify = _enc({"id": None, "method": "mining.notify", "params": [*self.job, True]}) + b"\n"
        self.diff_line = _enc({"id": None, "method": "mining.set_difficulty",
                               "params": [difficulty]}) + b"\n"
        self.conns: set[FastConn] = set()
        self.next_ext1 = 1
        self.submits = 0
        self.record = True
        self.recv: dict[int, int] = {}  # nonce -> CLOCK_MONOTONIC ns when the line arrived
        self.other_lines = 0

    def stats(self) -> dict[str, Any]:
        return {"submits": self.submits, "connections": len(self.conns),
                "other_lines": self.other_lines}


class FastConn(asyncio.Protocol):
    def __init__(self, pool: FastPool) -> None:
        self.pool = pool
        self.buf = b""
        self.transport: Any = None
        self.subscribed = self.authorized = self.work_sent = False
        self.ext1 = pool.next_ext1.to_bytes(EXTRANONCE1_SIZE, "big")
        pool.next_ext1 += 1

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.pool.conns.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        chunk, self.buf = take_lines(self.buf, data)
        if not chunk:
            return
        pool = self.pool
        out: list[bytes] = []
        match = SUBMIT_RE.match
        record = pool.record
        recv = pool.recv
        n = 0
        for line in chunk[:-1].split(b"\n"):
            m = match(line)
            if m is not None:
                n += 1
                out.append(b'{"id":' + m.group(1) + TRUE_TAIL)
                if record:
                    recv[int(m.group(2), 16)] = t
            elif line.strip():
                self._slow(line, out)
        pool.submits += n
        if out:
            self.transport.write(b"".join(out))

    def _slow(self, line: bytes, out: list[bytes]) -> None:
        pool = self.pool
        pool.other_lines += 1
        try:
            msg = _json.decode(line)
        except msgspec.DecodeError:
            return
        if not isinstance(msg, dict):
            return
        method, msg_id = msg.get("method"), msg.get("id")
        if method is None:
            return
        if method == "mining.subscribe":
            self.subscribed = True
            result: Any = [[["mining.set_difficulty", "1"], ["mining.notify", "1"]], self.ext1.hex(),
                           pool.e2_size]
        elif method == "mining.configure":
            result = {"version-rolling": False}
        elif method == "mining.submit":  # a submit the fast path did not recognise
            pool.submits += 1
            result = True
        else:
            if method == "mining.authorize":
                self.authorized = True
            result = True
        if msg_id is not None:
            out.append(b'{"id":' + _enc(msg_id) + b',"result":' + _enc(result) + b',"error":null}\n')
        if self.subscribed and self.authorized and not self.work_sent:
            self.work_sent = True
            out.append(pool.diff_line)
            out.append(pool.notify)


async def _control(conn: Any, handlers: dict[str, Any]) -> None:
    """Serve ("cmd", kwargs) requests from the harness until the pipe closes."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_readable() -> None:
        try:
            os.set_blocking(conn.fileno(), True)  # the loop made it non-blocking
            cmd, kwargs = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            if not done.done():
                done.set_result(None)
            return
        loop.create_task(_run(cmd, kwargs))

    async def _run(cmd: str, kwargs: dict[str, Any]) -> None:
        try:
            result = handlers[cmd](**kwargs)
            if asyncio.iscoroutine(result):
                result = await result
        except Exception:
            result, status = traceback.format_exc(), "error"
        else:
            status = "ok"
        os.set_blocking(conn.fileno(), True)
        conn.send((status, result))

    loop.add_reader(conn.fileno(), on_readable)
    await done


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def fast_pool_main(conn: Any, difficulty: float, e2_size: int) -> None:
    set_pdeathsig()

    async def main() -> None:
        pool = FastPool(difficulty, e2_size)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: FastConn(pool), "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]

        def dump() -> dict[str, Any]:
            keys = list(pool.recv)
            return {"nonces": keys, "times": [pool.recv[k] for k in keys]}

        def reset(record: bool = True) -> None:
            pool.recv.clear()
            pool.record = record

        handlers = {"stats": pool.stats, "dump": dump, "reset": reset}
        conn.send(("ok", {"port": port}))
        await _control(conn, handlers)
        server.close()

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())


# the sim pool's listen backlog: asyncio's default (100) drops SYNs when a proxy dials
# thousands of connections at once (one per rig), and a dropped SYN is retried after 1 s
SIM_POOL_BACKLOG = 4096


def sim_pools_main(conn: Any, specs: list[dict[str, Any]]) -> None:
    """Validating sim pools (proxy.sim.pool.SimPool), one process, several pools."""
    set_pdeathsig()
    from proxy.sim.pool import SimPool, SimPoolConfig

    class WideSimPool(SimPool):
        async def _listen(self) -> None:
            self._server = await asyncio.get_running_loop().create_server(
                self._make_conn, self.config.host, self.port, reuse_address=True,
                backlog=SIM_POOL_BACKLOG)
            self.port = self._server.sockets[0].getsockname()[1]

    async def main() -> None:
        pools: dict[str, SimPool] = {}
        for spec in specs:
            pool = WideSimPool(SimPoolConfig(**spec))
            await pool.start()
            pools[spec["name"]] = pool

        def stats() -> dict[str, Any]:
            return {name: {"accepted": p.accepted, "rejected": dict(p.rejected),
                           "connections": p.connections, "jobs_sent": p.jobs_sent,
                           "submits": p.submits, "invalid": sum(1 for s in p.shares if not s.valid),
                           # per open connection: the difficulty in force, vardiff changes,
                           # difficulty credited
                           "conns": [{"difficulty": s.difficulty, "retargets": s.retargets,
                                      "credited": s.credited, "accepted": s.accepted}
                                     for s in p.open_stats()]}
                    for name, p in pools.items()}

        def broadcast(name: str) -> dict[str, Any]:
            pool = pools[name]
            wall = time.time_ns()
            mono = time.monotonic_ns()
            job_id = pool.broadcast_job(clean=True)
            return {"wall_ns": wall, "mono_ns": mono, "job_id": job_id,
                    "after_write_wall_ns": time.time_ns()}

        async def reset(name: str) -> dict[str, Any]:
            pool = pools[name]
            t = time.monotonic()
            pool.reset_all()
            await pool.refuse()
            return {"t": t}

        def stall(name: str) -> dict[str, Any]:
            t = time.monotonic()
            pools[name].stall()
            return {"t": t}

        handlers = {"stats": stats, "broadcast": broadcast, "reset": reset, "stall": stall}
        conn.send(("ok", {name: p.port for name, p in pools.items()}))
        await _control(conn, handlers)
        for p in pools.values():
            await p.stop()

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())


def fleet_main(conn: Any, host: str, port: int, count: int, options: dict[str, Any]) -> None:
    """A ``proxy.sim.rigs.RigFleet`` of ``count`` rigs mining through the proxy at host:port
    (real double-SHA256 shares). In its own process: its sockets count against its own
    open-files limit, and its CPU is not the harness's."""
    set_pdeathsig()
    import logging

    from proxy.sim.rigs import RigFleet

    logging.getLogger("proxy.sim").setLevel(logging.ERROR)

    async def main() -> None:
        fleet = RigFleet(host, port, count, **options)
        conditions = {
            "authorized": lambda arg: fleet.authorized == count,
            "on_job": lambda tag: fleet.rigs_with_job_containing(tag.encode()) == count,
            "accepted": lambda at_least: fleet.accepted >= at_least,
        }

        async def wait(what: str, within: float, arg: Any = None) -> bool:
            """True once the condition holds; False after ``within`` seconds."""
            try:
                await fleet.wait_until(lambda: conditions[what](arg), within, what)
            except TimeoutError:
                return False
            return True

        def counts() -> dict[str, Any]:
            return {"connected": fleet.connected, "authorized": fleet.authorized,
                    "disconnects": fleet.disconnects, "lost": fleet.lost,
                    "submitted": fleet.submitted, "accepted": fleet.accepted}

        def moved(t: float, tag: str) -> list[float]:
            """ms from ``t`` until each rig's first job from the pool tagged ``tag`` (sorted;
            rigs that got none are left out)."""
            times = fleet.first_notify_after(t, tag.encode())
            return sorted((at - t) * 1000 for at in times if at is not None)

        async def drain(within: float) -> dict[str, Any]:
            """Stop mining, wait for the answers to what was sent; the fleet's ledger."""
            try:
                await fleet.drain(within)
            except TimeoutError:
                pass
            return {**counts(), "unanswered": fleet.unanswered(), "pending": fleet.pending,
                    "rejected": {str(k): v for k, v in fleet.rejected.items()},
                    "reconnect_requests": fleet.reconnect_requests,
                    "set_extranonce_received": fleet.set_extranonce_received}

        handlers = {"start": fleet.start, "wait": wait, "counts": counts, "moved": moved,
                    "drain": drain, "stop": fleet.stop}
        conn.send(("ok", {"pid": os.getpid()}))
        await _control(conn, handlers)
        await fleet.stop()

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(main())
