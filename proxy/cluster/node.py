"""One instance's place in the farm: registration, summaries, the election, the rental lead.

Every ``beat_s`` (a third of the lease TTL, at most ``publish_s``) the node:

1. renews its lease (one lease per instance: its registration and, when it leads, the
   leader key hang on it), or grants a new one when etcd says it expired;
2. publishes its summary under ``/<farm>/members/<instance>`` (on the lease: a dead
   instance disappears by itself after the TTL), with its power plan's figures when it has
   ``[power]`` (``proxy.cluster.power``);
3. reads every member's summary (the farm-wide view, and the backfill's delivered hashrate)
   and, with ``[power]``, the farm's curtailments (``proxy.cluster.curtail``);
4. campaigns for ``/<farm>/leader`` (a transaction: create it on our lease if nobody holds
   it), and starts or stops the rental controller as it wins or loses.

When etcd does not answer (unreachable, no quorum) the node says so once with an event
(``cluster_etcd_unreachable``), stops the rental controller at once (``rental_paused``:
with the ledger unwritable no money may move), and keeps trying; the instance keeps
mining on the settings it last applied.  When etcd answers again: ``cluster_etcd_back``,
and the leader (the old one if its lease survived, else the next to campaign) resumes.

Leadership is trusted locally only until ``lease_deadline``: the time the last successful
renewal was *sent* plus the TTL.  A leader frozen (SIGSTOP, a long GC, a VM pause) past
its TTL knows on waking that its lease may be gone before it asks etcd anything, and the
fence in etcd (``proxy.cluster.ledger``) refuses its writes in any case.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

from ..config import ClusterSection
from .curtail import FarmCurtailments
from .etcd import EtcdError, b64, client_for, compare_create, put_op
from .power import ClusterPower, member_power
from .rental import ClusterHashrate, start_leader_rental
from .settings import PoolSettings

log = logging.getLogger("proxy.cluster")

LEASE_MARGIN = 0.9  # trust a lease for this fraction of its TTL after the renewal was sent


class ClusterNode:
    """See the module docstring.  ``await start()``, ``await stop()``."""

    def __init__(self, service: Any, config: ClusterSection) -> None:
        self.service = service
        self.config = config
        self.name = service.config.proxy.instance
        self.etcd = client_for(config)
        self.root = f"/{config.farm}/"
        self.settings = PoolSettings(self.etcd, self.root, service)
        self.lease = 0
        self.lease_deadline = 0.0  # monotonic; our lease is trusted until then
        self.election = 0  # create revision of the leader key while we hold it, else 0
        self.leader: str | None = None
        self.etcd_ok: bool | None = None  # None until the first beat
        self.etcd_error = ""
        self.members: dict[str, dict[str, Any]] = {}
        self.rental_view: dict[str, Any] | None = None  # the leader's, read from etcd
        self.controller: Any = None  # the backfill controller while this instance leads
        rental = service.config.rental
        self.hashrate = (ClusterHashrate(self, rental.window_s, min(config.publish_s, rental.window_s / 4))
                         if rental is not None else None)
        self.power = ClusterPower(self)  # the members' power figures (the leader plans with them)
        self.curtailments = FarmCurtailments(self)  # the farm's curtailments, applied here
        self.beats = 0
        self.started = time.time()
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set when the leader key is deleted: campaign at once
        self._stopping = False

    def key(self, *parts: str) -> str:
        return self.root + "/".join(parts)

    @property
    def beat_s(self) -> float:
        return min(self.config.publish_s, self.config.lease_ttl_s / 3)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the farm's pool settings (a stopped instance gets the changes it missed) and
        start beating; an unreachable etcd delays nothing (the beat keeps trying)."""
        try:
            await self.settings.load()
        except EtcdError as exc:
            self._etcd_down(f"reading the pool settings at start: {exc}")
        self.settings.start()
        try:
            await self.beat()
        except Exception:  # the beat loop keeps trying; the instance runs either way
            log.exception("first cluster beat failed")
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="cluster-beat")
        self._watch_task = loop.create_task(self._watch_leader(), name="cluster-leader-watch")

    async def stop(self) -> None:
        """Leave: stop the controller (an open order stays; the next leader adopts it),
        revoke the lease (registration and leadership go at once, not after the TTL)."""
        self._stopping = True
        for task in (self._task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stop_rental("this instance is stopping", paused=False)
        await self.settings.stop()
        if self.lease:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(self.lease)
        await self.etcd.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.beat_s)
            self._wake.clear()
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster beat failed")

    # --- one beat ---------------------------------------------------------------------------

    async def beat(self) -> None:
        try:
            await self._renew()
            await self.etcd.put(self.key("members", self.name), json.dumps(self.summary(), default=str),
                                lease=self.lease)
            await self._read_members()
            await self.settings.load()
            if getattr(self.service, "power", None) is not None:
                await self.curtailments.load()
            await self._campaign()
        except EtcdError as exc:
            if "lease not found" in str(exc):  # it expired between two calls: register again
                self.lease, self.election = 0, 0
            self._etcd_down(str(exc))
            if self.leading() is not None:
                await self._stop_rental(f"etcd unreachable: {exc}", paused=True)
            return
        if self.etcd_ok is False:
            self._event("cluster_etcd_back", "etcd answers again", leader=self.leader)
        self.etcd_ok, self.etcd_error = True, ""
        self.beats += 1
        await self._follow_leadership()

    async def _renew(self) -> None:
        sent = time.monotonic()
        ttl = await self.etcd.keepalive(self.lease) if self.lease else 0
        if ttl <= 0:
            if self.lease:
                self._event("cluster_lease_lost", f"lease {self.lease:x} expired in etcd; registering again")
            self.election = 0
            self.lease = await self.etcd.grant(self.config.lease_ttl_s)
        self.lease_deadline = sent + self.config.lease_ttl_s * LEASE_MARGIN

    async def _read_members(self) -> None:
        kvs, _ = await self.etcd.range(self.key("members", ""), prefix=True)
        members: dict[str, dict[str, Any]] = {}
        for kv in kvs:
            with contextlib.suppress(ValueError):
                members[kv.key.rsplit("/", 1)[1]] = json.loads(kv.value)
        self.members = members
        if self.hashrate is not None:
            self.hashrate.sample()
        self.power.sample()
        view = await self.etcd.get(self.key("rental"))
        self.rental_view = json.loads(view.value) if view is not None else None

    async def _campaign(self) -> None:
        leader_key = self.key("leader")
        ok, revision, responses = await self.etcd.txn(
            [compare_create(leader_key, 0)], [put_op(leader_key, self.name, self.lease)],
            [{"request_range": {"key": b64(leader_key)}}])
        if ok:
            self.election, self.leader = revision, self.name
            self._event("cluster_leader", f"{self.name} leads the farm's rental controller",
                        leader=self.name, lease=f"{self.lease:x}")
            return
        kvs = responses[0].get("response_range", {}).get("kvs", []) if responses else []
        holder = kvs[0] if kvs else {}
        name = base64.b64decode(holder.get("value", "")).decode() if holder else None
        if name == self.name and int(holder.get("lease", 0)) == self.lease:
            self.election = int(holder.get("create_revision", 0))
        else:
            if self.election:
                self._event("cluster_leadership_lost", f"{name} leads now", leader=name)
            self.election = 0
        self.leader = name

    async def _watch_leader(self) -> None:
        """Campaign the moment the leader key goes (its holder's lease expired or was revoked)
        instead of at the next beat: the takeover then takes at most the dead leader's TTL."""
        while True:
            try:
                async for _, events in self.etcd.watch(self.key("leader"), 0):
                    if any(e.kind == "delete" and e.kv.key == self.key("leader") for e in events):
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except EtcdError as exc:
                log.debug("leader watch: %s", exc)
            except Exception:
                log.exception("leader watch failed")
            await asyncio.sleep(self.beat_s)

    # --- leadership and the rental controller -----------------------------------------------

    def leading(self) -> str | None:
        """None while this instance leads on a lease it may still trust; else why not."""
        if not self.election:
            return f"{self.leader or 'no instance'} leads, not {self.name}"
        if time.monotonic() > self.lease_deadline:
            trusted = self.config.lease_ttl_s * LEASE_MARGIN
            return (f"this instance's lease was last renewed more than {trusted:g}s ago: it may have "
                    "expired and another instance may lead")
        if self.etcd_ok is False:
            return f"etcd unreachable: {self.etcd_error}"
        return None

    async def _follow_leadership(self) -> None:
        if self.service.config.rental is None:
            return
        if self.leading() is None and self.controller is None and not self._stopping:
            try:
                self.controller = await start_leader_rental(self)
            except EtcdError as exc:  # the ledger could not be read: the next beat tries again
                self._event("rental_error", f"cannot load the ledger from etcd: {exc}", code="ledger")
                return
            self.service.rental = self.controller
            self._event("rental_resumed", f"{self.name} runs the farm's backfill controller",
                        leader=self.name)
        elif self.leading() is not None and self.controller is not None:
            await self._stop_rental(self.leading() or "", paused=False)
        if self.controller is not None:
            with contextlib.suppress(EtcdError):
                await self.etcd.put(self.key("rental"), json.dumps(
                    {**self.controller.view(), "leader": self.name}, default=str), lease=self.lease)

    async def _stop_rental(self, why: str, *, paused: bool) -> None:
        controller, self.controller = self.controller, None
        if controller is None:
            return
        if self.service.rental is controller:
            self.service.rental = None
        ledger = controller.ledger
        if not paused and self.leading() is None and hasattr(ledger, "flush"):
            with contextlib.suppress(Exception):  # leaving cleanly: the last rows reach etcd
                await ledger.flush()
        if paused:
            self._event("rental_paused", f"backfill controller paused: {why}", leader=self.leader)
        else:
            self._event("rental_stopped", f"backfill controller stopped on {self.name}: {why}",
                        leader=self.leader)
        await controller.stop()

    # --- what this instance publishes -------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        svc = self.service
        view, now = svc.view, svc.now()
        status = view.status(now) if view is not None else {}
        pools = view.pools(now) if view is not None else []
        return {"instance": self.name, "time": time.time(), "api_port": svc.api_port, "rig_port": svc.port,
                "api": self.config.api_url.rstrip("/") or
                f"http://{svc.config.api.listen.rsplit(':', 1)[0]}:{svc.api_port}",
                "accepted_difficulty": view.accepted_difficulty() if view is not None else 0.0,
                "status": {k: status.get(k) for k in (
                    "rigs_connected", "rigs_working", "hashrate", "active_pools", "counters", "pools",
                    "uptime_s")},
                "hashprice": status.get("hashprice"),
                "pools": [{k: p.get(k) for k in (
                    "name", "url", "state", "reason", "priority", "weight", "enabled", "draining", "active",
                    "rigs", "hashrate", "accepted", "accepted_difficulty", "rejected_total", "lost_total")}
                    for p in pools],
                **self._power_summary()}

    def _power_summary(self) -> dict[str, Any]:
        """This instance's power plan for the leader (``proxy.cluster.power``); none without
        ``[power]``, and an ``error`` (the leader then counts it unknown) when the plan fails."""
        monitor = getattr(self.service, "power", None)
        if monitor is None:
            return {}
        try:
            return {"power": member_power(monitor, self.config.publish_s)}
        except Exception as exc:  # the power figures are advisory: never stop the beat
            log.exception("publishing the power plan failed")
            return {"power": {"error": f"cannot plan: {exc}", "publish_s": self.config.publish_s}}

    def view(self) -> dict[str, Any]:
        """``GET /api/v1/cluster``: this instance's standing and the farm's members."""
        return {"instance": self.name, "farm": self.config.farm, "etcd": self.config.etcd,
                "beats": self.beats,
                "etcd_ok": self.etcd_ok, "etcd_error": self.etcd_error or None, "leader": self.leader,
                "leading": self.leading() is None, "lease": f"{self.lease:x}" if self.lease else None,
                "settings_revision": self.settings.revision, "settings": self.settings.known,
                "members": {n: {"time": m.get("time"), "api": m.get("api"), **(m.get("status") or {})}
                            for n, m in sorted(self.members.items())}}

    # --- events -----------------------------------------------------------------------------

    def _etcd_down(self, reason: str) -> None:
        if self.etcd_ok is not False:
            self._event("cluster_etcd_unreachable",
                        f"etcd unreachable: {reason}; mining on the last settings, writes refused", )
        self.etcd_ok, self.etcd_error = False, reason

    def _event(self, kind: str, reason: str, **fields: Any) -> None:
        log.info("%s: %s", kind, reason)
        self.service.events.emit(kind, time.time(), reason=reason, **fields)
