"""Scenario 3, connections: N idle-but-subscribed rigs, memory per rig, new-job fan-out.

The rigs are plain non-blocking sockets driven by epoll (an asyncio protocol per rig would
make the load generator, not the proxy, the slow part). Each rig subscribes and authorizes,
receives its difficulty and job, then idles. Memory per rig = proxy RSS delta / N
(/proc/<pid>/status VmRSS). Fan-out: the pool process notes the wall clock just before it
writes a new job to the proxy; every rig socket has SO_TIMESTAMPNS, so the kernel stamps
the moment the proxy's write reached that rig (on loopback the packet is delivered inside
the proxy's send call). Fan-out = last rig's stamp - pool write. Both are CLOCK_REALTIME on
one machine, and the figure does not include the time the harness takes to read the
sockets (reported separately as ``harness_read_ms``).

The rig sockets live in load-generator child processes (at most 8,000 rigs each, plus as many
bare sockets: under a 20,000 open-files limit per process), each connecting from its own
loopback source address 127.0.0.x. The baseline, in the same run: bare sender processes
(as many as proxy instances, SO_REUSEPORT on one port) hold as many plain connections to the
same children and write one notify-sized line to each in a plain loop; ratio = proxy fan-out
(last rig) / bare loop (last socket, from the first sender's first send).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import socket
import struct
import threading
import time
from typing import Any

from .common import HarnessError, free_port, md_table, proxy_config, raise_nofile, rss_kib, set_pdeathsig
from .poolproc import sim_pools_main

USE_UVLOOP = True
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
PER_SOURCE_IP = 25_000  # ephemeral ports per (source ip, destination) are ~28k
FANOUT_BAR_MS = 50.0
MEMORY_BAR_KIB = 10.0
CMSG_SPACE = socket.CMSG_SPACE(16)
READ_DELAY_S = 1.0
RATIO_BAR = 1.3
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    return {"rigs": a.rigs or (500 if ctx.smoke else 10_000),
            "broadcasts": 2 if ctx.smoke else 5, "pool": "validating sim pool (proxy.sim.pool)",
            "instances": max(1, getattr(a, "instances", 1))}


def _bind_source(s: socket.socket, source: str) -> None:
    """Bind to a source address and leave the port to connect(): it then picks a port free
    for this 4-tuple at once (a plain bind to port 0 searches the whole range, slower and
    slower as it fills)."""
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((source, 0))


class Rigs:
    """N raw rig sockets on one epoll."""

    def __init__(self, host: str, port: int, source: str = "") -> None:
        self.host = host
        self.port = port
        self.source = source
        self.notify_size = 0
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
                if self.source:
                    _bind_source(s, self.source)
                elif count > PER_SOURCE_IP:
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

    def open_bare(self, count: int, timeout: float) -> float:
        """Connect ``count`` plain sockets (no Stratum) and wait until all are connected."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.source:
                _bind_source(s, self.source)
            err = s.connect_ex((self.host, self.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                raise HarnessError(f"bare connect failed: {errno.errorcode.get(err, err)}")
            self.socks[s.fileno()] = s
            self.connecting.add(s.fileno())
            self.ep.register(s.fileno(), select.EPOLLOUT)
            while len(self.connecting) >= 250:  # the senders accept in one thread each
                self._connected(deadline)
        while self.connecting:
            self._connected(deadline)
        return time.monotonic() - t0

    def _connected(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise HarnessError(f"bare sockets: {len(self.connecting)} still connecting")
        for fd, _ in self.ep.poll(0.05):
            if fd in self.connecting:
                err = self.socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise HarnessError(f"bare connect failed: {errno.errorcode.get(err, err)}")
                self.connecting.discard(fd)
                self.ep.modify(fd, select.EPOLLIN)

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
                self.notify_size = len(data)
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


RIGS_PER_CHILD = 8_000  # each child also holds as many bare sockets: 16,000 fds < 20,000
BARE_PER_SENDER = 17_000


def _serve(conn: Any, handlers: dict[str, Any]) -> None:
    """A blocking control loop: (cmd, kwargs) in, ("ok", value) or ("error", text) out."""
    while True:
        try:
            cmd, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        if cmd == "stop":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", handlers[cmd](**kwargs)))
        except Exception as exc:  # noqa: BLE001 - reported to the harness
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def rig_child_main(conn: Any, host: str, proxy_port: int, bare_port: int, source: str,
                   count: int, first: int) -> None:
    """A load-generator child: ``count`` rigs on the proxy and ``count`` bare sockets on the
    bare senders, all from the loopback source address ``source``."""
    set_pdeathsig()
    rigs = Rigs(host, proxy_port, source)
    bare = Rigs(host, bare_port, source)
    hello = rigs.hello
    rigs.hello = lambda i: hello(first + i)  # type: ignore[method-assign]

    def collect(which: str, wait: float) -> dict[str, Any]:
        r = rigs if which == "rigs" else bare
        stamps, missing, read_ms = r.collect_job(wait)
        return {"stamps": stamps, "missing": missing, "read_ms": read_ms,
                "closed": r.closed, "notify_size": r.notify_size}

    def drain() -> None:
        rigs.drain()
        bare.drain()

    handlers = {
        "open": lambda wait: rigs.open(count, wait),
        "open_bare": lambda wait: bare.open_bare(count, wait),
        "drain": drain,
        "collect": collect,
    }
    conn.send(("ok", {"pid": os.getpid()}))
    try:
        _serve(conn, handlers)
    finally:
        rigs.close()
        bare.close()


def bare_sender_main(conn: Any, host: str, port: int) -> None:
    """The baseline: accept plain connections (SO_REUSEPORT, one port shared by the senders)
    and, on "send", write one line to each of them in a plain loop: no Stratum, no per-rig
    objects, the least a process can do to put a job on every socket."""
    set_pdeathsig()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    lsock.bind((host, port))
    lsock.listen(4096)
    lsock.settimeout(0.2)
    socks: list[socket.socket] = []
    stop = threading.Event()

    def acceptor() -> None:
        while not stop.is_set():
            try:
                s, _ = lsock.accept()
            except (TimeoutError, OSError):
                continue
            s.setblocking(True)
            socks.append(s)

    t = threading.Thread(target=acceptor, daemon=True)
    t.start()

    def send(size: int) -> dict[str, Any]:
        body = b'{"id":null,"method":"mining.notify","params":["'
        line = body + b"0" * max(0, size - len(body) - 4) + b'"]}\n'
        send_ = socket.socket.send
        t0 = time.time_ns()
        for s in socks:
            send_(s, line)
        return {"wall_ns": t0, "end_wall_ns": time.time_ns(), "sockets": len(socks)}

    conn.send(("ok", {"port": lsock.getsockname()[1]}))
    try:
        _serve(conn, {"count": lambda: len(socks), "send": send})
    finally:
        stop.set()
        t.join(1.0)
        for s in socks:
            s.close()
        lsock.close()


def _fanout(stamps: list[int], t: int, missing: int, read_ms: float) -> dict[str, Any]:
    if not stamps:
        raise HarnessError("no socket received the new job")
    stamps.sort()
    return {"rigs_received": len(stamps), "rigs_missing": missing,
            "first_ms": round((stamps[0] - t) / 1e6, 3),
            "p50_ms": round((stamps[len(stamps) // 2] - t) / 1e6, 3),
            "last_ms": round((stamps[-1] - t) / 1e6, 3),
            "harness_read_ms": round(read_ms, 1)}


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    n = p["rigs"]
    inst = p["instances"]
    # the proxies inherit the limit; each holds about n / instances rig sockets
    nofile = raise_nofile(n // inst + 2000)
    if nofile < n // inst + 500:
        ctx.log(f"connections: open-files limit {nofile} is too low for {n} rigs on {inst} "
                f"instance(s); using {(nofile - 1000) * inst}")
        n = p["rigs"] = max(10, (nofile - 1000) * inst)
    p["nofile_limit"] = nofile
    n_children = -(-n // RIGS_PER_CHILD)
    n_senders = max(inst, -(-n // BARE_PER_SENDER))
    p["loadgen_processes"] = n_children
    p["bare_senders"] = n_senders
    procs = ctx.procs
    pools, ports = await procs.start_child(sim_pools_main, [
        {"name": "pool", "difficulty": 2.0 ** -20, "job_interval": 0.0, "extranonce2_size": 8}])
    proxies, proxy_port = await procs.start_proxies(proxy_config(
        [{"name": "pool", "url": f"stratum+tcp://127.0.0.1:{ports['pool']}", "user": "bench"}],
        # the rigs are idle by design: keep the proxy's stall watch (no share for 6 intervals,
        # at least 60 s: rigs reported stalled, their difficulty lowered) out of the fan-out
        # figures; at 50,000 rigs a run lasts past 60 s
        keepalive_s=3600.0, rig_share_interval_s=3600.0), inst)
    pids = [x.pid for x in proxies]
    bare_port = free_port()
    senders = [(await procs.start_child(bare_sender_main, "127.0.0.1", bare_port))[0]
               for _ in range(n_senders)]
    children = []
    for c in range(n_children):
        count = min(RIGS_PER_CHILD, n - c * RIGS_PER_CHILD)
        child, _ = await procs.start_child(rig_child_main, "127.0.0.1", proxy_port, bare_port,
                                           f"127.0.0.{2 + c}", count, c * RIGS_PER_CHILD)
        children.append(child)

    def rss() -> int:
        return sum(rss_kib(pid) for pid in pids)

    async def each(cmd: str) -> list[Any]:
        return list(await asyncio.gather(*(ch.call(cmd, timeout=60.0) for ch in children)))

    await asyncio.sleep(0.5)
    rss0 = rss()
    ctx.log(f"connections: {n} idle rigs over {n_children} load-generator process(es), "
            f"{inst} proxy instance(s), {n_senders} bare sender(s) (open-files limit {nofile}); "
            f"proxy RSS before {rss0 / 1024:.1f} MiB")
    t0 = time.monotonic()
    open_timeout = 60.0 + n / 500
    await asyncio.gather(*(ch.call("open", timeout=open_timeout + 10, wait=open_timeout)
                           for ch in children))
    setup_s = time.monotonic() - t0
    await asyncio.sleep(1.0)
    rss1 = rss()
    per_rig_kib = (rss1 - rss0) / n
    ctx.log(f"  {n} rigs subscribed with a job in {setup_s:.1f} s; proxy RSS "
            f"{rss1 / 1024:.1f} MiB, {per_rig_kib:.2f} KiB per rig")
    await asyncio.gather(*(ch.call("open_bare", timeout=open_timeout + 10, wait=open_timeout)
                           for ch in children))
    deadline = time.monotonic() + 30.0
    while sum(await asyncio.gather(*(s.call("count") for s in senders))) < n:
        if time.monotonic() > deadline:
            raise HarnessError("the bare senders did not accept every socket")
        await asyncio.sleep(0.1)
    read_delay = max(READ_DELAY_S, n / 20_000)
    read_timeout = 10.0 + n / 5_000
    fanouts: list[dict[str, Any]] = []
    bares: list[dict[str, Any]] = []
    notify_size = 0
    closed = 0
    for _ in range(p["broadcasts"]):
        await each("drain")
        sent = await pools.call("broadcast", name="pool")
        # read only after the proxy is done writing: the stamps are the kernel's, and readers
        # busy on the other core would slow the proxy's loopback sends down
        await asyncio.sleep(read_delay)
        got = await asyncio.gather(*(ch.call(
            "collect", timeout=read_timeout + 10, which="rigs", wait=read_timeout)
            for ch in children))
        notify_size = max(g["notify_size"] for g in got)
        closed = sum(g["closed"] for g in got)
        f = _fanout([x for g in got for x in g["stamps"]], sent["wall_ns"],
                    sum(g["missing"] for g in got), max(g["read_ms"] for g in got))
        fanouts.append(f)
        ctx.log(f"  fan-out: first {f['first_ms']} ms, median {f['p50_ms']} ms, last rig "
                f"{f['last_ms']} ms ({f['rigs_received']} rigs, {f['rigs_missing']} missing)")
        await asyncio.sleep(0.2)
        # the baseline, right after, over as many sockets: a bare send loop per sender process
        await each("drain")
        starts = await asyncio.gather(*(s.call("send", size=notify_size) for s in senders))
        await asyncio.sleep(read_delay)
        got = await asyncio.gather(*(ch.call(
            "collect", timeout=read_timeout + 10, which="bare", wait=read_timeout)
            for ch in children))
        b = _fanout([x for g in got for x in g["stamps"]], min(s["wall_ns"] for s in starts),
                    sum(g["missing"] for g in got), max(g["read_ms"] for g in got))
        bares.append(b)
        ctx.log(f"  bare send loop: median {b['p50_ms']} ms, last socket {b['last_ms']} ms "
                f"({b['rigs_received']} sockets); ratio {f['last_ms'] / b['last_ms']:.2f}")
        await asyncio.sleep(0.2)
    rss2 = rss()
    lasts = sorted(f["last_ms"] for f in fanouts)
    bare_lasts = sorted(b["last_ms"] for b in bares)
    ratios = sorted(round(f["last_ms"] / b["last_ms"], 3) for f, b in zip(fanouts, bares))
    result = {
        "scenario": "connections", "params": p, "rigs": n, "setup_s": round(setup_s, 2),
        "proxy_rss_kib_before": rss0, "proxy_rss_kib_with_rigs": rss1,
        "proxy_rss_kib_after_fanout": rss2,
        "rss_per_rig_kib": round(per_rig_kib, 3), "fanouts": fanouts, "bare_fanouts": bares,
        "notify_bytes": notify_size,
        "fanout_last_ms_median": lasts[len(lasts) // 2],
        "fanout_last_ms_max": lasts[-1],
        "bare_last_ms_median": bare_lasts[len(bare_lasts) // 2],
        "fanout_ratios": ratios,
        "fanout_ratio_median": ratios[len(ratios) // 2],
        "setup_rigs_disconnected": closed,
    }
    result["bars"] = [
        {"bar": f"< {MEMORY_BAR_KIB:g} KiB per rig", "value": result["rss_per_rig_kib"],
         "met": result["rss_per_rig_kib"] < MEMORY_BAR_KIB},
        {"bar": f"fan-out to {n:,} rigs < {FANOUT_BAR_MS:g} ms (median of {len(lasts)})",
         "value": result["fanout_last_ms_median"],
         "met": result["fanout_last_ms_median"] < FANOUT_BAR_MS},
        {"bar": f"fan-out within {RATIO_BAR:g}x of a bare send loop (median ratio)",
         "value": result["fanout_ratio_median"],
         "met": result["fanout_ratio_median"] <= RATIO_BAR},
    ]
    return result


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    rows = [[i + 1, f["rigs_received"], f["rigs_missing"], f["first_ms"], f["p50_ms"], f["last_ms"],
             b["p50_ms"], b["last_ms"], round(f["last_ms"] / b["last_ms"], 2),
             f["harness_read_ms"]]
            for i, (f, b) in enumerate(zip(result["fanouts"], result["bare_fanouts"]))]
    return "\n".join([
        "## connections",
        "",
        f"{result['rigs']:,} idle subscribed rigs (connected in {result['setup_s']} s) on "
        f"{p.get('instances', 1)} proxy process(es), from {p.get('loadgen_processes', 1)} "
        f"load-generator process(es) on their own loopback addresses. Proxy RSS (sum) "
        f"{result['proxy_rss_kib_before'] / 1024:.1f} MiB -> "
        f"{result['proxy_rss_kib_with_rigs'] / 1024:.1f} MiB: "
        f"**{result['rss_per_rig_kib']:.2f} KiB per rig**.",
        "",
        "New-job fan-out, ms from the pool's write to each rig's kernel receive stamp; the bare "
        f"send loop ({p.get('bare_senders', 1)} process(es) writing one "
        f"{result.get('notify_bytes', 0)}-byte line to each of as many plain sockets, no "
        "Stratum) right after, from its first send; ratio = last rig / last bare socket:",
        "",
        md_table(["broadcast", "rigs", "missing", "first", "median rig", "last rig",
                  "bare median", "bare last", "ratio", "harness read time"], rows),
        "",
        md_table(["bar", "value", "met"], [[b["bar"], b["value"], b["met"]] for b in result["bars"]]),
    ]) + "\n"
