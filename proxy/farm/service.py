"""The running control plane: polls every instance, serves the farm API, propagates changes.

A change (priority, weight, enable, drain, reload) goes to every instance at once; each
instance's answer is reported separately.  An instance that could not be reached (network
error, timeout, 5xx, 429) keeps the change queued and gets it again every ``retry_s`` until
it takes it or a newer change to the same thing replaces it; an instance that refused it
(4xx) is reported and not retried, since it would refuse again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..cluster.etcd import describe_client_error
from ..core.events import EventLog
from .config import FarmConfig, InstanceEntry
from .view import InstanceState, farm_status

log = logging.getLogger("proxy.farm")

EVENTS_KEPT_PER_INSTANCE = 1000
RETRYABLE = {408, 429, 500, 502, 503, 504}


class InstanceUnreachable(Exception):
    """No usable answer: connection refused, timeout, 5xx, or not JSON."""


@dataclass
class Change:
    """One write for one instance, kept until that instance takes it."""

    instance: str
    method: str
    path: str
    body: dict[str, Any] | None
    first_tried: float
    attempts: int = 0
    last_error: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.instance, self.method, self.path)


class FarmService:
    def __init__(self, config: FarmConfig, *, with_api: bool = True) -> None:
        self.config = config
        self.with_api = with_api
        self.instances = [InstanceState(e.name, e.api.rstrip("/")) for e in config.instances]
        self._entries = {e.name: e for e in config.instances}
        for inst in self.instances:
            inst.events = deque(maxlen=EVENTS_KEPT_PER_INSTANCE)  # type: ignore[assignment]
        self.events = EventLog()
        self.pending: dict[tuple[str, str, str], Change] = {}
        self.started = time.time()
        self.http: aiohttp.ClientSession | None = None
        self.api_runner: Any = None
        self.api_port = 0
        self.rental: Any = None  # the farm-wide backfill controller, when [rental] is set
        self._meter: Any = None  # its delivered-hashrate source, sampled after every poll
        self._tasks: list[asyncio.Task] = []
        self.polls = 0
        self._polled = asyncio.Event()
        self.etcd: Any = None  # with [cluster]: the farm's etcd (instances, settings, the leader)
        self.etcd_error = ""
        self.leader: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.farm.timeout_s)
        self.http = aiohttp.ClientSession(timeout=timeout)
        if self.config.cluster is not None:
            from ..cluster.etcd import client_for

            self.etcd = client_for(self.config.cluster)
        await self.poll_once()
        if self.config.rental is not None:
            from .rental import start_farm_rental

            self.rental, self._meter = await start_farm_rental(self)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(self.config.farm.poll_s, self.poll_once)),
                       loop.create_task(self._every(self.config.farm.retry_s, self.retry_pending))]
        if self.with_api:
            from .app import start_farm_api

            self.api_runner, self.api_port = await start_farm_api(self)
        log.info("farm %s: %d instances, %d up", self.config.farm.name, len(self.instances),
                 sum(1 for i in self.instances if i.up))

    async def stop(self) -> None:
        if self.rental is not None:
            await self.rental.stop()  # stops deciding; an open order is adopted on restart
            self.rental = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.api_runner is not None:
            await self.api_runner.cleanup()
        if self.http is not None:
            await self.http.close()
        if self.etcd is not None:
            await self.etcd.close()

    async def _every(self, period: float, job: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except Exception:
                log.exception("farm: %s failed", getattr(job, "__name__", job))

    def now(self) -> float:
        return time.time()

    async def wait_polled(self, polls: int, timeout: float) -> None:
        """Until ``polls`` more polls have completed (tests and the CLI use it)."""
        target = self.polls + polls
        async with asyncio.timeout(timeout):
            while self.polls < target:
                self._polled.clear()
                await self._polled.wait()

    # ------------------------------------------------------------------ reading instances

    async def request(self, inst: str, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, JSON) from one instance; InstanceUnreachable when it gave no usable answer."""
        assert self.http is not None
        entry: InstanceEntry = self._entries[inst]
        headers = {"Authorization": f"Bearer {entry.token}"} if entry.token and method != "GET" else {}
        url = entry.api.rstrip("/") + path
        try:
            async with self.http.request(method, url, params=params, json=body, headers=headers) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    raise InstanceUnreachable(f"HTTP {resp.status}: not JSON") from None
                if resp.status in RETRYABLE:
                    message = data.get("error") if isinstance(data, dict) else None
                    raise InstanceUnreachable(f"HTTP {resp.status}: {message or resp.reason}")
                return resp.status, data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise InstanceUnreachable(describe_client_error(exc)) from None

    async def discover(self) -> None:
        """With [cluster]: the instances are etcd's registered members (their API from their
        summary); a member gone from etcd stays listed and its polls say whether it is up."""
        from ..cluster.etcd import EtcdError

        root = f"/{self.config.cluster.farm}/"  # type: ignore[union-attr]
        try:
            kvs, _ = await self.etcd.range(root + "members/", prefix=True)
            leader = await self.etcd.get(root + "leader")
        except EtcdError as exc:
            self.etcd_error = str(exc)
            return
        self.etcd_error = ""
        self.leader = leader.value.decode() if leader is not None else None
        for kv in kvs:
            name = kv.key.rsplit("/", 1)[1]
            try:
                api = str(json.loads(kv.value).get("api") or "")
            except ValueError:
                continue
            entry = self._entries.get(name)
            if entry is None:
                self._entries[name] = InstanceEntry(name=name, api=api)
                inst = InstanceState(name, api.rstrip("/"))
                inst.events = deque(maxlen=EVENTS_KEPT_PER_INSTANCE)  # type: ignore[assignment]
                self.instances.append(inst)
            elif entry.api != api:
                entry.api = api
                next(i for i in self.instances if i.name == name).api = api.rstrip("/")

    async def poll_once(self) -> None:
        if self.etcd is not None:
            await self.discover()
        await asyncio.gather(*(self._poll(inst) for inst in self.instances))
        if self._meter is not None:
            self._meter.sample()
        self.polls += 1
        self._polled.set()

    async def _poll(self, inst: InstanceState) -> None:
        inst.polls += 1
        try:
            _, status = await self.request(inst.name, "GET", "/api/v1/status")
            _, pools = await self.request(inst.name, "GET", "/api/v1/pools")
            if inst.status is not None and status.get("uptime_s", 0) < inst.status.get("uptime_s", 0):
                inst.last_seq = 0  # restarted: its event numbers start again
            _, events = await self.request(inst.name, "GET", "/api/v1/events",
                                           params={"after": inst.last_seq, "limit": 2000}
                                           if inst.last_seq else {"limit": 2000})
        except InstanceUnreachable as exc:
            inst.failures += 1
            inst.last_error = str(exc)
            if inst.up or inst.polls == 1:
                inst.up = False
                self.events.emit("instance_down", self.now(), instance=inst.name,
                                 reason=f"no answer from {inst.api}: {exc}",
                                 last_known_hashrate=round((inst.status or {}).get("hashrate") or 0.0, 1))
            return
        inst.status = status
        inst.pools = pools.get("pools", [])
        for event in events.get("events", []):
            inst.last_seq = max(inst.last_seq, int(event.get("seq", 0)))
            inst.events.append({**event, "instance": inst.name})
        inst.last_ok = self.now()
        if not inst.up:
            inst.up = True
            self.events.emit("instance_up", self.now(), instance=inst.name,
                             reason=f"answering at {inst.api}",
                             rigs=status.get("rigs_connected"), hashrate=status.get("hashrate"))

    def status(self) -> dict[str, Any]:
        view = farm_status(self.config.farm.name, self.instances, self.now(), self.started,
                           bool(self.config.farm.token))
        view["changes_pending"] = [self._change_view(c) for c in self.pending.values()]
        if self.etcd is not None:
            view["cluster"] = {"farm": self.config.cluster.farm, "etcd": self.config.cluster.etcd,  # type: ignore[union-attr]
                               "etcd_ok": not self.etcd_error, "etcd_error": self.etcd_error or None,
                               "leader": self.leader}
        return view

    async def write_setting(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """With [cluster]: one etcd transaction; every instance's watch applies it."""
        from ..cluster.settings import write_pool_setting

        merged, revision = await write_pool_setting(
            self.etcd, f"/{self.config.cluster.farm}/pools/", name, changes)  # type: ignore[union-attr]
        self.events.emit("farm_change", self.now(), instance=self.config.farm.name, pool=name,
                         body=changes, settings=merged, revision=revision,
                         reason="written to etcd; every instance applies it from its watch")
        return {"ok": True, "pool": name, "settings": merged, "revision": revision}

    async def leader_rentals(self) -> dict[str, Any]:
        """With [cluster]: the rental leader's view, as it publishes it in etcd."""
        from ..cluster.etcd import EtcdError

        try:
            kv = await self.etcd.get(f"/{self.config.cluster.farm}/rental")  # type: ignore[union-attr]
        except EtcdError as exc:
            return {"enabled": True, "state": "unknown", "orders": [], "note": f"etcd unreachable: {exc}"}
        if kv is None:
            return {"enabled": True, "state": "no_leader", "orders": [], "leader": self.leader,
                    "note": "no instance leads the backfill controller now"}
        return json.loads(kv.value)

    def delivered_hashrate(self) -> float | None:
        """The farm's delivered hashrate, or None when no instance answered (unknown is not 0:
        renting on a blind control plane would pay for hashrate the rigs may be delivering)."""
        up = [i for i in self.instances if i.up and i.status is not None]
        if not up:
            return None
        return float(sum(i.status.get("hashrate", 0.0) for i in up))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ writing instances

    async def apply(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """Send one change to every instance; per instance: applied, refused, or queued."""
        results = await asyncio.gather(*(self._apply_one(i.name, method, path, body)
                                         for i in self.instances))
        per_instance = dict(zip((i.name for i in self.instances), results))
        applied = [n for n, r in per_instance.items() if r["result"] == "applied"]
        refused = [n for n, r in per_instance.items() if r["result"] == "refused"]
        queued = [n for n, r in per_instance.items() if r["result"] == "queued"]
        self.events.emit("farm_change", self.now(), instance=self.config.farm.name,
                         change=f"{method} {path}", body=body, applied=applied, refused=refused,
                         queued=queued,
                         reason=("applied on every instance" if not refused and not queued
                                 else f"applied on {len(applied)}/{len(per_instance)} instances"))
        return {"applied": applied, "refused": refused, "queued_for_retry": queued,
                "instances": per_instance}

    async def _apply_one(self, inst: str, method: str, path: str,
                         body: dict[str, Any] | None) -> dict[str, Any]:
        change = Change(inst, method, path, dict(body) if body else None, self.now())
        old = self.pending.pop(change.key, None)
        if old is not None and old.body and change.body is not None:
            change.body = {**old.body, **change.body}  # the newer value of each field wins
        return await self._send(change)

    async def _send(self, change: Change) -> dict[str, Any]:
        change.attempts += 1
        try:
            status, data = await self.request(change.instance, change.method, change.path, body=change.body)
        except InstanceUnreachable as exc:
            change.last_error = str(exc)
            self.pending[change.key] = change
            return {"result": "queued", "error": str(exc), "attempts": change.attempts}
        self.pending.pop(change.key, None)
        if status >= 400:
            message = data.get("error") if isinstance(data, dict) else str(data)
            return {"result": "refused", "status": status, "error": message}
        return {"result": "applied", "status": status, "answer": data}

    async def retry_pending(self) -> None:
        for change in list(self.pending.values()):
            result = await self._send(change)
            if result["result"] != "queued":
                self.events.emit("farm_change_retried", self.now(), instance=change.instance,
                                 change=f"{change.method} {change.path}", body=change.body,
                                 result=result["result"], attempts=change.attempts,
                                 reason=result.get("error") or "the instance took the change")

    def _change_view(self, change: Change) -> dict[str, Any]:
        return {"instance": change.instance, "change": f"{change.method} {change.path}",
                "body": change.body, "attempts": change.attempts, "last_error": change.last_error,
                "age_s": round(self.now() - change.first_tried, 3)}

