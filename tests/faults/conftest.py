"""Fault injection on real loopback sockets: two sim pools, the proxy, 50 sim rigs.

Shared by the pool-fault and hostile-rig suites: a small farm builder, a TLS front whose
behaviour a test switches (good certificate, bad certificate, plain TCP, hang-up mid
handshake), an injectable resolver, and the share-accounting check every case ends with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet

RIGS = 50
SHARE_INTERVAL = 0.2
ARTIFACTS = Path(__file__).parent / "artifacts"
SUMMARY = ARTIFACTS / "accounting.json"
SUMMED = ("rig_submits", "rig_accepted", "proxy_submits", "proxy_accepted", "proxy_rejected",
          "below_pool_target", "forwarded", "pool_accepted", "pool_rejected", "lost",
          "rig_disconnects", "unanswered_rig_submits")

# Short windows so a case takes about a second: a share unanswered for 1 s marks a pool silent.
FAULT_PROXY = {
    "silent_timeout_s": 1.0,
    "failback_hold_s": 60.0,  # the farm stays on the backup for the rest of a case
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "connect_timeout_s": 1.0,
}


class Resolver:
    """The Dialer's injectable resolver: a name table, and names that fail like a dead DNS."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)
        self.broken: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    async def __call__(self, host: str) -> str:
        self.calls[host] += 1
        if host in self.broken or host not in self.table:
            self.failures[host] += 1
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    with contextlib.suppress(Exception):
        dst.close()


class TlsFront:
    """A pool's TLS endpoint (in front of a SimPool) with a switchable failure mode.

    ``ok``: TLS with the certificate the proxy trusts; ``bad_cert``: TLS with a self-signed
    certificate it does not trust; ``plain``: the pool speaks plain Stratum to the TLS
    client; ``hangup``: the ClientHello is read, then the connection is closed mid-handshake.
    Switching modes aborts the connections open so far, so the proxy must redial into it.
    """

    MODES = ("ok", "bad_cert", "plain", "hangup")

    def __init__(self, pool_port: int, good: ssl.SSLContext, bad: ssl.SSLContext) -> None:
        self.pool_port = pool_port
        self.contexts = {"ok": good, "bad_cert": bad}
        self.mode = "ok"
        self.port = 0
        self.accepted: Counter[str] = Counter()
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        for name, ctx in self.contexts.items():
            self._servers[name] = await asyncio.start_server(self._terminate, "127.0.0.1", 0,
                                                             ssl=ctx)
        self._servers["front"] = await asyncio.start_server(self._front, "127.0.0.1", 0)
        self.port = self._servers["front"].sockets[0].getsockname()[1]

    def set_mode(self, mode: str) -> None:
        assert mode in self.MODES
        self.mode = mode
        for writer in list(self._writers):
            writer.transport.abort()

    async def _front(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.accepted[mode] += 1
        self._track(writer)
        if mode == "plain":
            writer.write(b'{"id":null,"method":"client.show_message","params":["plain TCP"]}\n')
            with contextlib.suppress(Exception):
                await reader.read(65536)  # until the client gives up
            writer.close()
            return
        if mode == "hangup":
            with contextlib.suppress(Exception):
                await reader.read(1)  # the ClientHello has started arriving
            writer.close()
            return
        port = self._servers[mode].sockets[0].getsockname()[1]
        await self._relay(reader, writer, port)

    async def _terminate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer)
        await self._relay(reader, writer, self.pool_port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.transport.abort()
            return
        self._track(up_writer)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def _track(self, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(lambda t: (self._tasks.discard(t), self._writers.discard(writer)))

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)


def _make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    f"/CN=127.0.0.1/O={name}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """A certificate the proxy trusts (via ca_file) and an unrelated self-signed one."""
    directory = tmp_path_factory.mktemp("certs")
    return {"good": _make_cert(directory, "good"), "bad": _make_cert(directory, "bad")}


def server_context(cert_key: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert_key)
    return ctx


class FaultFarm:
    """Primary + backup sim pools, the proxy, a fleet of rigs; torn down in reverse order."""

    def __init__(self) -> None:
        self.pools: dict[str, SimPool] = {}
        self.proxy: ProxyService | None = None
        self.fleet: RigFleet | None = None
        self.fronts: list[TlsFront] = []
        self.resolver: Resolver | None = None
        self.started = time.monotonic()

    async def pool(self, name: str, **kwargs: Any) -> SimPool:
        kwargs.setdefault("difficulty", 2.0 ** -24)  # ~256 hashes per share
        kwargs.setdefault("job_interval", 2.0)
        kwargs.setdefault("seed", len(self.pools) + 11)
        pool = SimPool(SimPoolConfig(name=name, **kwargs))
        await pool.start()
        self.pools[name] = pool
        return pool

    async def tls_front(self, pool: SimPool, certs: dict[str, tuple[Path, Path]]) -> TlsFront:
        front = TlsFront(pool.port, server_context(certs["good"]), server_context(certs["bad"]))
        await front.start()
        self.fronts.append(front)
        return front

    async def start_proxy(self, pools: list[dict[str, Any]], resolver: Resolver | None = None,
                          **proxy: Any) -> ProxyService:
        settings = {"listen": "127.0.0.1:0", **FAULT_PROXY, **proxy}
        entries = [{"user": "farm", "priority": i, **p} for i, p in enumerate(pools)]
        cfg = load_dict({"proxy": settings, "api": {"enabled": False}, "pools": entries})
        self.resolver = resolver
        self.proxy = ProxyService(cfg, resolver=resolver)
        await self.proxy.start()
        return self.proxy

    async def start_fleet(self, count: int = RIGS, **kwargs: Any) -> RigFleet:
        assert self.proxy is not None
        kwargs.setdefault("share_interval", SHARE_INTERVAL)
        kwargs.setdefault("seed", 7)
        kwargs.setdefault("latency_window", 1_000_000)  # keep every sample: windows are sliced
        self.fleet = RigFleet("127.0.0.1", self.proxy.port, count, **kwargs)
        await self.fleet.start()
        await self.fleet.wait_until(lambda: self.fleet.authorized == count, 15,
                                    f"{count} rigs authorized")
        return self.fleet

    def view(self, name: str) -> dict[str, Any]:
        assert self.proxy is not None and self.proxy.view is not None
        return self.proxy.view.pool(name, self.proxy.now())

    async def close(self) -> None:
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                await self.fleet.stop()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                await self.proxy.stop()
        for front in self.fronts:
            with contextlib.suppress(Exception):
                await front.stop()
        for pool in self.pools.values():
            with contextlib.suppress(Exception):
                await pool.stop()


@pytest.fixture
async def fault_farm():
    farm = FaultFarm()
    try:
        yield farm
    finally:
        await asyncio.wait_for(farm.close(), 15)


async def until(predicate, timeout: float, what: str, poll: float = 0.01) -> None:
    """Await a condition on proxy state (which has no change event), bounded in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(poll)


async def quiesce(farm: FaultFarm, timeout: float = 10.0) -> None:
    """Rigs stop mining, every rig submit is answered, every forwarded share has its verdict
    (or was timed out / lost with a reason): the counters stop moving."""
    assert farm.fleet is not None and farm.proxy is not None
    await farm.fleet.drain(timeout)
    await until(lambda: farm.proxy.in_flight_shares() == 0, timeout, "no share in flight")


def check_accounting(farm: FaultFarm, *, other_accepted: int = 0,
                     other_rejected: Counter | None = None,
                     exact_pools: tuple[str, ...] = ()) -> dict[str, Any]:
    """The accounting identity, exactly, after quiesce(); returns the totals for the summary.

    Per pool: forwarded == accepted + rejected + timeouts + lost (+ in flight, 0 here).
    Farm: shares the proxy accepted from rigs == forwarded to pools + below the pools' target;
    submits == accepted + rejected.  Rigs: each sim rig's own count of accepted and rejected
    answers (by code) equals the proxy's count for its session, and the fleet's totals plus
    the hostile clients' (``other_*``) equal the proxy's.  Pools: a pool never judged more
    shares than were forwarded to it, the proxy never counts an accept the pool did not give,
    and every share the pool judged without the proxy hearing the verdict is in timeouts or
    lost.  ``exact_pools``: pools whose every verdict reached the proxy (no fault on them).
    """
    fleet, proxy = farm.fleet, farm.proxy
    assert fleet is not None and proxy is not None and proxy.core is not None
    core = proxy.core
    t = core.totals
    pools: dict[str, Any] = {}
    for name, sim in farm.pools.items():
        v = farm.view(name)
        settled = v["accepted"] + v["rejected_total"] + v["timeouts"] + v["lost_total"]
        assert v["in_flight"] == 0, (name, v)
        assert v["forwarded"] == settled + v["in_flight"], (name, v)
        judged = sim.accepted + sim.rejected_total
        assert judged <= v["forwarded"], (name, judged, v)
        assert v["accepted"] <= sim.accepted and v["rejected_total"] <= sim.rejected_total, (name, v)
        assert judged - v["accepted"] - v["rejected_total"] <= v["timeouts"] + v["lost_total"]
        if name in exact_pools:
            assert (v["accepted"], v["rejected_total"]) == (sim.accepted, sim.rejected_total), (name, v)
        bad = [s for s in sim.shares if not s.valid]
        assert bad == [], (name, bad[:3])  # the proxy never sends a share a pool would refuse
        pools[name] = {"forwarded": v["forwarded"], "accepted": v["accepted"],
                       "rejected": v["rejected"], "timeouts": v["timeouts"], "lost": v["lost"],
                       "in_flight": v["in_flight"], "late_answers": v["late_answers"],
                       "judged_by_pool": judged, "state": v["state"], "last_error": v["last_error"]}
    forwarded = sum(p["forwarded"] for p in pools.values())
    assert t["accepted"] == forwarded + t["below_pool_target"] + t["outside_pool_mask"], (t, forwarded)
    assert t["submits"] == t["accepted"] + t["rejected"], t
    # the rigs' side of the ledger
    assert fleet.disconnects == 0 and fleet.lost == 0 and fleet.pending == 0
    assert fleet.submitted == fleet.answered, (fleet.submitted, fleet.answered)
    sessions = {s.worker: s for s in core.rigs.values() if s.worker}
    for rig in fleet.rigs:
        session = sessions[rig.worker]
        assert session.accepted == rig.accepted, rig.worker
        assert Counter(session.rejected) == Counter(rig.rejected), rig.worker
    other_rejected = other_rejected or Counter()
    assert t["accepted"] == fleet.accepted + other_accepted, (t, fleet.accepted)
    assert t["rejected"] == sum(fleet.rejected.values()) + sum(other_rejected.values())
    lost = Counter()
    for p in pools.values():
        lost.update(p["lost"])
        lost["timeout"] += p["timeouts"]
    return {
        "rigs": fleet.count, "rig_submits": fleet.submitted, "rig_accepted": fleet.accepted,
        "rig_rejected": {str(k): n for k, n in sorted(fleet.rejected.items(), key=str)},
        "proxy_submits": t["submits"], "proxy_accepted": t["accepted"],
        "proxy_rejected": t["rejected"], "below_pool_target": t["below_pool_target"],
        "forwarded": forwarded,
        "pool_accepted": sum(p["accepted"] for p in pools.values()),
        "pool_rejected": sum(sum(p["rejected"].values()) for p in pools.values()),
        "lost": sum(lost.values()), "lost_by_reason": dict(lost),
        "in_flight": 0, "rig_disconnects": fleet.disconnects,
        "unanswered_rig_submits": fleet.submitted - fleet.answered,
        "pools": pools,
    }


def record(suite: str, case: str, totals: dict[str, Any], seconds: float, **extra: Any) -> None:
    """Merge one case's totals into artifacts/accounting.json (the longest run is quoted)."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        data = json.loads(SUMMARY.read_text())
    except (OSError, ValueError):
        data = {}
    cases = data.setdefault("cases", {})
    cases[f"{suite}::{case}"] = {"suite": suite, "case": case, "seconds": round(seconds, 3),
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra, **totals}
    data["longest_run"] = max(cases.values(), key=lambda c: c["seconds"])
    summed: Counter[str] = Counter()
    for c in cases.values():
        summed.update({k: c[k] for k in SUMMED})
    data["all_cases"] = dict(summed)
    data["faults_covered"] = sorted(c["case"] for c in cases.values() if c["suite"] == "pool_faults")
    data["bad_inputs_covered"] = sorted(c["case"] for c in cases.values()
                                        if c["suite"] == "hostile_rigs")
    data["counts"] = {"pool_faults": len(data["faults_covered"]),
                      "hostile_rig_inputs": len(data["bad_inputs_covered"])}
    tmp = SUMMARY.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(SUMMARY)
