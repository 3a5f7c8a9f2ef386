"""One farm for the suites that run the proxy between sim pools and sim rigs on loopback.

Used by the end-to-end suite (``tests/e2e``), the fault-injection suites (``tests/faults``)
and, through ``Cluster``, the many-instances suite (``tests/farm``): sim pools, the proxy
service (API off), rig fleets, TLS fronts, torn down in reverse order; the share-ledger
check every fault case ends with; TLS certificates made with openssl.

Everything here reads the proxy through its public surface only: ``ProxyService.view``
(the core's read-only view), ``ProxyService.events`` and what the sims saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import RigFleet, SimPool, SimPoolConfig, wait_until

CertKey = tuple[Path, Path]


def pool_view(proxy: ProxyService, name: str) -> dict[str, Any]:
    """One pool's figures as the REST API serves them."""
    assert proxy.view is not None
    return proxy.view.pool(name, proxy.now())


def rig_views(proxy: ProxyService) -> list[dict[str, Any]]:
    """Every connected rig as the REST API serves it (id, worker, shares, pool ...)."""
    assert proxy.view is not None
    total, rigs = proxy.view.rigs(proxy.now(), 0, proxy.view.rig_count() + 1)
    assert total == len(rigs)
    return rigs


class ProxyReads:
    """What a test may read of the proxy under test: its core's read-only view and its event
    bus, never a core object.  Subclasses say which service is under test."""

    def service(self) -> ProxyService:
        raise NotImplementedError

    def view(self, name: str) -> dict[str, Any]:
        """One pool's figures (what GET /api/v1/pools/<name> serves)."""
        return pool_view(self.service(), name)

    def rigs(self) -> list[dict[str, Any]]:
        return rig_views(self.service())

    def rig_count(self) -> int:
        view = self.service().view
        assert view is not None
        return view.rig_count()

    def active_pools(self) -> list[str]:
        view = self.service().view
        assert view is not None
        return view.active_pools()

    def totals(self) -> dict[str, int]:
        view = self.service().view
        assert view is not None
        return view.totals()

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The proxy's decision log, one kind, oldest first."""
        return self.service().events.recent(kind=kind)


async def stop_all(*groups: Iterable[Any]) -> None:
    """Teardown: ``await x.stop()`` for every x, group after group, whatever one raised."""
    for group in groups:
        for item in group:
            with contextlib.suppress(Exception):
                await item.stop()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then close the other side (one direction of a relay)."""
    with contextlib.suppress(Exception):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    with contextlib.suppress(Exception):
        dst.close()


def make_cert(directory: Path, name: str) -> CertKey:
    """A self-signed certificate for 127.0.0.1 (and its key), made by openssl."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    f"/CN=127.0.0.1/O={name}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_context(cert_key: CertKey) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert_key)
    return ctx


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
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

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


class Farm(ProxyReads):
    """Sim pools + the proxy + rig fleets (+ TLS fronts), torn down in reverse order.

    Each suite sets its own defaults: the e2e farm mines slowly on pools whose job lasts,
    the fault farm mines fast with short detection windows (``tests/faults/conftest.py``).
    """

    def __init__(self, *, pool_defaults: dict[str, Any] | None = None,
                 proxy_defaults: dict[str, Any] | None = None,
                 fleet_defaults: dict[str, Any] | None = None) -> None:
        # ~256 hashes per share at 2^-24: cheap for Python rigs
        self.pool_defaults = {"difficulty": 2.0 ** -24, "job_interval": 30.0, **(pool_defaults or {})}
        self.proxy_defaults = dict(proxy_defaults or {})
        self.fleet_defaults = {"share_interval": 0.5, **(fleet_defaults or {})}
        self.pools: dict[str, SimPool] = {}
        self.proxy: ProxyService | None = None
        self.fleets: list[RigFleet] = []
        self.fronts: list[TlsFront] = []

    async def pool(self, name: str, **kwargs: Any) -> SimPool:
        options = {**self.pool_defaults, "seed": len(self.pools) + 11, **kwargs}
        pool = SimPool(SimPoolConfig(name=name, **options))
        await pool.start()
        self.pools[name] = pool
        return pool

    async def tls_front(self, pool: SimPool, certs: dict[str, CertKey]) -> TlsFront:
        """A TLS endpoint for ``pool`` with ``certs["good"]`` (trust it with ``ca_file``)."""
        front = TlsFront(pool.port, server_context(certs["good"]), server_context(certs["bad"]))
        await front.start()
        self.fronts.append(front)
        return front

    async def start_proxy(self, pools: list[dict[str, Any]] | None = None, *, prefix_start: int = 0,
                          resolver: Any = None, **proxy: Any) -> ProxyService:
        """The proxy on ``pools`` (default: every sim pool, in the order made): each entry
        names a sim pool and may set anything a ``[[pools]]`` entry has (``url`` included)."""
        if pools is None:
            pools = [{"name": name} for name in self.pools]
        entries = []
        for i, p in enumerate(pools):
            entry: dict[str, Any] = {"user": "farm", "priority": i}
            if p["name"] in self.pools:
                entry["url"] = f"stratum+tcp://127.0.0.1:{self.pools[p['name']].port}"
            entries.append({**entry, **p})
        settings = {"listen": "127.0.0.1:0", **self.proxy_defaults, **proxy}
        cfg = load_dict({"proxy": settings, "api": {"enabled": False}, "pools": entries})
        self.proxy = ProxyService(cfg, prefix_start=prefix_start, resolver=resolver)
        await self.proxy.start()
        return self.proxy

    async def start_fleet(self, count: int, *, port: int | None = None,
                          authorized_within: float = 20.0, **kwargs: Any) -> RigFleet:
        """``count`` sim rigs on the proxy (or on ``port``), once every one is authorized."""
        if port is None:
            assert self.proxy is not None
            port = self.proxy.port
        options = {**self.fleet_defaults, **kwargs}
        options.setdefault("seed", len(self.fleets) + 1)
        fleet = RigFleet("127.0.0.1", port, count, **options)
        self.fleets.append(fleet)
        await fleet.start()
        await fleet.wait_until(lambda: fleet.authorized == count, authorized_within,
                               f"{count} rigs authorized")
        return fleet

    @property
    def fleet(self) -> RigFleet:
        """The farm's fleet, when it has exactly one."""
        assert len(self.fleets) == 1, f"{len(self.fleets)} fleets"
        return self.fleets[0]

    def service(self) -> ProxyService:
        assert self.proxy is not None, "the proxy is not started"
        return self.proxy

    async def close(self) -> None:
        await stop_all(self.fleets, [self.proxy] if self.proxy else [], self.fronts, self.pools.values())


@contextlib.asynccontextmanager
async def running_farm(**defaults: Any) -> AsyncIterator[Farm]:
    """A ``Farm`` for one test (the fixtures' body), closed within 15 s whatever happened."""
    farm = Farm(**defaults)
    try:
        yield farm
    finally:
        await asyncio.wait_for(farm.close(), 15)


async def quiesce(farm: Farm, timeout: float = 10.0) -> None:
    """Rigs stop mining, every rig submit is answered, every forwarded share has its verdict
    (or was timed out / lost with a reason): the counters stop moving."""
    proxy = farm.service()
    await farm.fleet.drain(timeout)
    await wait_until(lambda: proxy.in_flight_shares() == 0, timeout, what="no share in flight")


def check_accounting(farm: Farm, *, other_accepted: int = 0,
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
    fleet = farm.fleet
    t = farm.totals()
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
    sessions = {r["worker"]: r for r in farm.rigs() if r["worker"]}
    for rig in fleet.rigs:
        session = sessions[rig.worker]
        assert session["shares"]["accepted"] == rig.accepted, rig.worker
        assert Counter(session["shares"]["rejected"]) == Counter(rig.rejected), rig.worker
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
