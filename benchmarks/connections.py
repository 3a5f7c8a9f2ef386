"""Scenario 3, connections: N idle-but-subscribed rigs, memory per rig, new-job fan-out.

The rigs are plain non-blocking sockets driven by epoll (an asyncio protocol per rig would
make the load generator, not the proxy, the slow part). Each rig subscribes and authorizes,
receives its difficulty and job, then idles. Memory per rig = proxy RSS delta / N
(/proc/<pid>/status VmRSS). Fan-out: the pool process notes the wall clock just before it
writes a new job to the proxy; every rig socket has SO_TIMESTAMPNS, so the kernel stamps
the moment the proxy's write reached that rig (on loopback the packet is delivered inside
the proxy's send call). Fan-out = last rig's stamp - pool write. Both are CLOCK_REALTIME on
one machine, and the figure does not include the time this process takes to read 10,000
sockets (reported separately as ``harness_read_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import select
import socket
import struct
import time
from typing import Any

from .common import HarnessError, md_table, proxy_config, raise_nofile, rss_kib
from .poolproc import sim_pools_main

USE_UVLOOP = True
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PER_SOURCE_IP = 25_000  # ephemeral ports per (source ip, destination) are ~28k
FANOUT_BAR_MS = 50.0
MEMORY_BAR_KIB = 10.0
CMSG_SPACE = socket.CMSG_SPACE(16)
READ_DELAY_S = 1.0


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    return {"rigs": a.rigs or (500 if ctx.smoke else 10_000),
            "broadcasts": 2 if ctx.smoke else 5, "pool": "validating sim pool (proxy.sim.pool)",
            "instances": max(1, getattr(a, "instances", 1))}


class Rigs:
    """N raw rig sockets on one epoll."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.ep = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.connecting: set[int] = set()
        self.waiting: set[int] = set()  # hello sent, job not seen yet
        self.tails: dict[int, bytes] = {}
        self.failed = 0
        self.closed = 0

    def hello(self, i: int) -> bytes:
        return (b'{"id":1,"method":"mining.subscribe","params":["benchrig/1.0"]}\n'
                b'{"id":2,"method":"mining.authorize","params":["idle.%d","x"]}\n' % i)

    def open(self, count: int, timeout: float, inflight: int = 1000) -> float:
        """Connect ``count`` rigs and wait until every one has its first job; returns seconds."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        started = 0
        index: dict[int, int] = {}
        while started < count or self.connecting or self.waiting:
            while started < count and len(self.connecting) + len(self.waiting) < inflight:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                if count > PER_SOURCE_IP:
                    s.bind((f"127.0.0.{1 + started // PER_SOURCE_IP}", 0))
                err = s.connect_ex((self.host, self.port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise HarnessError(f"connect failed: {errno.errorcode.get(err, err)}")
                fd = s.fileno()
                self.socks[fd] = s
                index[fd] = started
                self.connecting.add(fd)
                self.ep.register(fd, select.EPOLLOUT | select.EPOLLIN)
                started += 1
            if time.monotonic() > deadline:
                done = len(self.socks) - len(self.connecting) - len(self.waiting)
                raise HarnessError(f"connections: only {done}/{count} rigs got a job in "
                                   f"{timeout:.0f}s ({len(self.connecting)} connecting)")
            for fd, ev in self.ep.poll(0.05):
                s = self.socks[fd]
                if fd in self.connecting and ev & (select.EPOLLOUT | select.EPOLLERR):
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise HarnessError(f"connect failed: {errno.errorcode.get(err, err)}")
                    self.connecting.discard(fd)
                    self.waiting.add(fd)
                    s.sendall(self.hello(index[fd]))
                    self.ep.modify(fd, select.EPOLLIN)
                    continue
                if ev & select.EPOLLIN:
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise HarnessError("the proxy closed a rig during setup")
                    seen = self.tails.get(fd, b"") + data
                    if b"mining.notify" in seen:
                        self.waiting.discard(fd)
                        self.tails.pop(fd, None)
                    else:
                        self.tails[fd] = seen[-32:]
        return time.monotonic() - t0

    def drain(self) -> None:
        while True:
            events = self.ep.poll(0.05)
            if not events:
                return
            for fd, _ in events:
                with contextlib.suppress(BlockingIOError):
                    self.socks[fd].recv(65536)

    def collect_job(self, timeout: float) -> tuple[list[int], int, float]:
        """Read every rig's next data; (kernel receive stamps in ns, rigs missing, read ms)."""
        t0 = time.monotonic()
        pending = set(self.socks)
        stamps: list[int] = []
        deadline = t0 + timeout
        while pending and time.monotonic() < deadline:
            for fd, _ in self.ep.poll(0.05):
                if fd not in pending:
                    with contextlib.suppress(BlockingIOError):
                        self.socks[fd].recv(65536)
                    continue
                try:
                    data, anc, _, _ = self.socks[fd].recvmsg(65536, CMSG_SPACE)
                except BlockingIOError:
                    continue
                if not data:
                    self.closed += 1
                    pending.discard(fd)
                    continue
                if b"mining.notify" not in data:
                    continue
                pending.discard(fd)
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", payload[:16])
                        stamps.append(sec * 1_000_000_000 + nsec)
                        break
        return stamps, len(pending), (time.monotonic() - t0) * 1000

    def close(self) -> None:
        for s in self.socks.values():
            with contextlib.suppress(OSError):
                s.close()
        self.socks.clear()
        self.ep.close()


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    n = p["rigs"]
    nofile = raise_nofile(n + 2000)  # before the proxy starts: it inherits the limit
    if nofile < n + 200:
        ctx.log(f"connections: open-files limit {nofile} is too low for {n} rigs; using "
                f"{nofile - 500}")
        n = p["rigs"] = max(10, nofile - 500)
    p["nofile_limit"] = nofile
    procs = ctx.procs
    pools, ports = await procs.start_child(sim_pools_main, [
        {"name": "pool", "difficulty": 2.0 ** -20, "job_interval": 0.0, "extranonce2_size": 8}])
    proxies, proxy_port = await procs.start_proxies(proxy_config(
        [{"name": "pool", "url": f"stratum+tcp://127.0.0.1:{ports['pool']}", "user": "bench"}],
        keepalive_s=3600.0), p["instances"])
    pids = [x.pid for x in proxies]

    def rss() -> int:
        return sum(rss_kib(pid) for pid in pids)

    await asyncio.sleep(0.5)
    rss0 = rss()
    ctx.log(f"connections: {n} idle rigs (open-files limit {nofile}); proxy RSS before "
            f"{rss0 / 1024:.1f} MiB")
    rigs = Rigs("127.0.0.1", proxy_port)
    loop = asyncio.get_running_loop()
    try:
        setup_s = await loop.run_in_executor(None, rigs.open, n, 60.0 + n / 500)
        await asyncio.sleep(1.0)
        gc.collect()
        rss1 = rss()
        per_rig_kib = (rss1 - rss0) / n
        ctx.log(f"  {n} rigs subscribed with a job in {setup_s:.1f} s; proxy RSS "
                f"{rss1 / 1024:.1f} MiB, {per_rig_kib:.2f} KiB per rig")
        fanouts: list[dict[str, Any]] = []
        for _ in range(p["broadcasts"]):
            await loop.run_in_executor(None, rigs.drain)
            sent = await pools.call("broadcast", name="pool")
            # read only after the proxy is done writing: the stamps are the kernel's, and a
            # reader busy on the other core would slow the proxy's loopback sends down
            await asyncio.sleep(READ_DELAY_S)
            stamps, missing, read_ms = await loop.run_in_executor(None, rigs.collect_job, 10.0)
            if not stamps:
                raise HarnessError("no rig received the new job")
            stamps.sort()
            t = sent["wall_ns"]
            f = {"rigs_received": len(stamps), "rigs_missing": missing,
                 "first_ms": round((stamps[0] - t) / 1e6, 3),
                 "p50_ms": round((stamps[len(stamps) // 2] - t) / 1e6, 3),
                 "last_ms": round((stamps[-1] - t) / 1e6, 3),
                 "harness_read_ms": round(read_ms, 1)}
            fanouts.append(f)
            ctx.log(f"  fan-out: first {f['first_ms']} ms, median {f['p50_ms']} ms, last rig "
                    f"{f['last_ms']} ms ({f['rigs_received']} rigs, {missing} missing)")
            await asyncio.sleep(0.2)
        rss2 = rss()
    finally:
        rigs.close()
    lasts = sorted(f["last_ms"] for f in fanouts)
    result = {
        "scenario": "connections", "params": p, "rigs": n, "setup_s": round(setup_s, 2),
        "proxy_rss_kib_before": rss0, "proxy_rss_kib_with_rigs": rss1,
        "proxy_rss_kib_after_fanout": rss2,
        "rss_per_rig_kib": round(per_rig_kib, 3), "fanouts": fanouts,
        "fanout_last_ms_median": lasts[len(lasts) // 2],
        "fanout_last_ms_max": lasts[-1],
        "setup_rigs_disconnected": rigs.closed,
    }
    result["bars"] = [
        {"bar": f"< {MEMORY_BAR_KIB:g} KiB per rig", "value": result["rss_per_rig_kib"],
         "met": result["rss_per_rig_kib"] < MEMORY_BAR_KIB},
        {"bar": f"fan-out to {n:,} rigs < {FANOUT_BAR_MS:g} ms (median of {len(lasts)})",
         "value": result["fanout_last_ms_median"],
         "met": result["fanout_last_ms_median"] < FANOUT_BAR_MS},
    ]
    return result


def markdown(result: dict[str, Any]) -> str:
    rows = [[i + 1, f["rigs_received"], f["rigs_missing"], f["first_ms"], f["p50_ms"], f["last_ms"],
             f["harness_read_ms"]] for i, f in enumerate(result["fanouts"])]
    return "\n".join([
        "## connections",
        "",
        f"{result['rigs']:,} idle subscribed rigs (connected in {result['setup_s']} s) on "
        f"{result['params'].get('instances', 1)} proxy process(es). Proxy RSS (sum) "
        f"{result['proxy_rss_kib_before'] / 1024:.1f} MiB -> "
        f"{result['proxy_rss_kib_with_rigs'] / 1024:.1f} MiB: "
        f"**{result['rss_per_rig_kib']:.2f} KiB per rig**.",
        "",
        "New-job fan-out, ms from the pool's write to each rig's kernel receive stamp:",
        "",
        md_table(["broadcast", "rigs", "missing", "first", "median rig", "last rig",
                  "harness read time"], rows),
        "",
        md_table(["bar", "value", "met"], [[b["bar"], b["value"], b["met"]] for b in result["bars"]]),
    ]) + "\n"
