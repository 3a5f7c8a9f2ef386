"""The power monitor: polls every ``[[power.ups]]`` over NUT, keeps the curtailments (config
and API), and hands the backfill controller the plan (``input()``) on each of its steps.

Asyncio glue around the pure parts (``nutproto``, ``plan``): one poll task per UPS, each
poll a fresh NUT session with a deadline; a UPS that cannot be read is ``unknown`` with the
reason and an event, and nothing else in the proxy notices.  Events: ``power_ups`` when a
UPS's power state changes (or why it is unknown changes), ``power_decision`` when a UPS's
or a curtailment's decision changes, ``power_curtailment`` when one is added or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..core.events import emit_safely
from .config import CurtailConfig, PowerSection, UpsConfig, check_curtail
from .match import RigMatcher
from .nut import read_ups, tls_context
from .nutproto import Power, UpsReading, parse_target
from .plan import (
    Curtailment,
    LeadEstimator,
    MatchCache,
    PowerInput,
    PowerPlan,
    RigFigure,
    UpsState,
    plan,
)

log = logging.getLogger("proxy.power")

EventSink = Callable[..., None]
RigSource = Callable[[], list[RigFigure]]
KEEP_OVER_S = 86400.0  # API curtailments stay listed this long after their window


class CurtailmentError(ValueError):
    """A curtailment the API refuses; the message starts with the bad field."""


def _curtailment(c: CurtailConfig, cid: str, source: str, where: str) -> Curtailment:
    matcher = check_curtail(where, c)
    return Curtailment(cid, c.name, matcher, c.start.timestamp(), c.until.timestamp(), c.reason,
                       c.rent, source, tuple(c.workers), tuple(c.addresses))


def stored_curtailment(c: Curtailment) -> dict[str, Any]:
    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    return {"id": c.id, "name": c.name, "workers": list(c.workers), "addresses": list(c.addresses),
            "from": iso(c.start), "until": iso(c.until), "reason": c.reason, "rent": c.rent}


class PowerMonitor:
    def __init__(self, section: PowerSection, rigs: RigSource, *, events: EventSink | None = None,
                 wall: Callable[[], float] = time.time, env: Any = None) -> None:
        self.rigs = rigs
        self.events = events
        self.wall = wall
        self.env = os.environ if env is None else env
        self.lead = LeadEstimator(section.order_lead_s, section.learn_lead)
        self.ups: dict[str, UpsState] = {}
        self._ups_cfg: dict[str, UpsConfig] = {}
        self._credentials: dict[str, tuple[str | None, str | None]] = {}
        self._tls: dict[str, ssl.SSLContext] = {}
        self.curtailments: dict[str, Curtailment] = {}
        self._decided: dict[tuple[str, str], str] = {}
        self._cache: MatchCache = {}
        self._cache_for: list[str] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self.last_plan: PowerPlan | None = None
        self._bad_farm: set[str] = set()  # unreadable farm curtailments already reported
        self._configure(section)

    def _configure(self, section: PowerSection) -> None:
        """Take the UPSes and the config's curtailments from ``section`` (at start and on a
        reload); a UPS whose name and NUT address stay keeps its last reading."""
        self.section = section
        self.lead.configured_s, self.lead.learn = section.order_lead_s, section.learn_lead
        old, self.ups = self.ups, {}
        old_cfg, self._ups_cfg = self._ups_cfg, {}
        self._credentials.clear()
        self._tls.clear()
        for u in section.ups:
            kept = old.get(u.name) if u.name in old_cfg and old_cfg[u.name].nut == u.nut else None
            matcher = RigMatcher.build(u.workers, u.addresses)
            fresh = UpsReading(Power.UNKNOWN, reason="not read yet")
            self.ups[u.name] = (UpsState(u.name, matcher, kept.reading, kept.read_at, kept.last_known) if kept
                                else UpsState(u.name, matcher, fresh))
            self._ups_cfg[u.name] = u
            self._credentials[u.name] = (self.env.get(u.user_env) if u.user_env else None,
                                         self.env.get(u.password_env) if u.password_env else None)
            if u.tls:
                self._tls[u.name] = tls_context(u.ca_file, u.tls_verify)
        self.curtailments = {k: v for k, v in self.curtailments.items() if v.source != "config"}
        for i, c in enumerate(section.curtail):
            cid = f"config-{i}"
            self.curtailments[cid] = _curtailment(c, cid, "config", f"power.curtail[{i}]")
        self._cache.clear()
        self._cache_for = list(self.curtailments)

    def apply(self, section: PowerSection) -> list[str]:
        """A reloaded ``[power]`` (validated already): new UPSes polled, removed ones no
        longer, config curtailments replaced (the API's stay).  What changed, in words."""
        before = set(self._ups_cfg)
        self._configure(section)
        after = set(self._ups_cfg)
        for name in before - after:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
        if self._running:  # (re)start the polls of every UPS
            for name in after:
                task = self._tasks.pop(name, None)
                if task is not None:
                    task.cancel()
                self._start_poll(name)
        self.refresh()
        changes = [f"UPS {n} added" for n in sorted(after - before)]
        changes += [f"UPS {n} removed" for n in sorted(before - after)]
        changes.append(f"{len(section.ups)} UPS(es), {len(section.curtail)} config curtailment(s)")
        self._emit("power_reload", "; ".join(changes), ups=sorted(after))
        return changes

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._load_api_curtailments()
        for name in self.ups:
            self._start_poll(name)

    def _start_poll(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        self._tasks[name] = loop.create_task(self._poll_loop(name), name=f"nut-{name}")

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll_loop(self, name: str) -> None:
        while name in self._ups_cfg:
            cfg = self._ups_cfg[name]
            try:
                await self.poll(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one UPS stop the monitor
                log.exception("polling UPS %s failed", name)
            await asyncio.sleep(cfg.poll_s)

    async def poll(self, name: str) -> UpsReading:
        """Read one UPS now, record it, emit what changed, re-plan."""
        cfg = self._ups_cfg[name]
        user, password = self._credentials[name]
        reading = await read_ups(parse_target(cfg.nut), user, password, cfg.timeout_s, self._tls.get(name))
        old = self.ups.get(name)
        if old is None or self._ups_cfg.get(name) is not cfg:  # reloaded meanwhile: not ours
            return reading
        known = old.last_known if reading.power is Power.UNKNOWN else reading.power
        self.ups[name] = UpsState(name, old.matcher, reading, self.wall(), known)
        if (reading.power, reading.reason if reading.power is Power.UNKNOWN else "") != (
                old.reading.power, old.reading.reason if old.reading.power is Power.UNKNOWN else ""):
            if reading.power is Power.UNKNOWN:
                text = f"UPS {name} unknown: {reading.reason}"
            else:
                state = POWER_WORDS.get(reading.power, reading.power.value)
                text = (f"UPS {name} {state} ({reading.status}), charge "
                        f"{_num(reading.charge, '%')}, runtime {_num(reading.runtime_s, 's')}")
            self._emit("power_ups", text, ups=name, power=reading.power.value, status=reading.status,
                       charge=reading.charge, runtime_s=reading.runtime_s)
        self.refresh()
        return reading

    # --- the plan ---------------------------------------------------------------------------

    def _rig_figures(self) -> list[RigFigure]:
        try:
            return self.rigs()
        except Exception:
            log.exception("reading the rigs failed")
            return []

    def refresh(self) -> PowerPlan:
        """Plan now; one ``power_decision`` event for each UPS / curtailment whose decision changed."""
        now = self.wall()
        if self._cache_for != list(self.curtailments):  # the matchers changed: match afresh
            self._cache.clear()
            self._cache_for = list(self.curtailments)
        result = plan(list(self.ups.values()), list(self.curtailments.values()), self._rig_figures(), now,
                      self.lead.lead_s(), self.section.runtime_margin_s, self._cache)
        for d in result.decisions:
            key = (d.kind, d.figures.get("id", d.name))
            if self._decided.get(key) != d.decision:
                self._decided[key] = d.decision
                self._emit("power_decision", d.reason, **d.event_fields())
        self.last_plan = result
        return result

    def input(self) -> PowerInput:
        """What the backfill controller gets on each step."""
        return self.refresh().input

    def order_delivered(self, seconds: float) -> None:
        """The controller saw an order deliver after ``seconds``: learn the lead from it."""
        before = self.lead.lead_s()
        self.lead.observe(seconds)
        if self.lead.lead_s() != before:
            self._emit("power_lead", f"order lead now {self.lead.lead_s():.0f}s (an order took "
                       f"{seconds:.0f}s to deliver)", order_lead_s=self.lead.lead_s(), observed_s=seconds)

    # --- curtailments through the API -------------------------------------------------------

    def check_curtailment(self, body: Any, source: str = "api") -> Curtailment:
        """Validate one (not added); ``CurtailmentError`` names the bad field."""
        from ..config import ConfigError, convert

        if not isinstance(body, dict):
            raise CurtailmentError("body: expected a JSON object")
        try:
            c = convert(body, CurtailConfig)
            item = _curtailment(c, uuid.uuid4().hex[:12], source, "")
        except ConfigError as exc:
            raise CurtailmentError(str(exc).lstrip(".")) from None
        if item.until <= self.wall():
            raise CurtailmentError("until: already past")
        return item

    def set_farm_curtailments(self, stored: dict[str, dict[str, Any]]) -> None:
        """The farm's curtailments as read from etcd (``proxy.cluster.curtail``): id -> the
        stored form; they replace the previous farm ones, the others stay."""
        items: dict[str, Curtailment] = {}
        for cid, raw in stored.items():
            try:
                c = msgspec.convert({k: v for k, v in raw.items() if k != "id"}, CurtailConfig)
                items[cid] = _curtailment(c, cid, "farm", "")
            except Exception as exc:  # a damaged entry is skipped and named (once), the rest apply
                if cid not in self._bad_farm:
                    self._bad_farm.add(cid)
                    self._emit("power_error", f"farm curtailment {cid} in etcd unreadable, skipped: {exc}")
        old = {k for k, v in self.curtailments.items() if v.source == "farm"}
        if old == set(items) and all(self.curtailments[k] == v for k, v in items.items()):
            return
        for cid in old - set(items):
            self._emit("power_curtailment", f"farm curtailment {self.curtailments[cid].name or cid} removed",
                       id=cid, action="remove", source="farm")
            del self.curtailments[cid]
        for cid in set(items) - old:
            self._emit("power_curtailment", f"farm curtailment {items[cid].name or cid} applied "
                       f"({items[cid].reason or 'no reason given'})", id=cid, action="add", source="farm")
        self.curtailments.update(items)
        self.refresh()

    def add_curtailment(self, body: Any) -> dict[str, Any]:
        """Validate and add one; ``CurtailmentError`` names the bad field."""
        item = self.check_curtailment(body)
        self.curtailments[item.id] = item
        self._save_api_curtailments()
        fields = {k: v for k, v in stored_curtailment(item).items() if k not in ("id", "reason")}
        self._emit("power_curtailment", f"curtailment {item.name or item.id} added "
                   f"({item.reason or 'no reason given'})", id=item.id, action="add", **fields)
        self.refresh()
        return self.curtailment_view(item)

    def remove_curtailment(self, cid: str) -> bool:
        item = self.curtailments.get(cid)
        if item is None or item.source != "api":
            return False
        del self.curtailments[cid]
        self._save_api_curtailments()
        self._emit("power_curtailment", f"curtailment {item.name or cid} removed", id=cid, action="remove")
        self.refresh()
        return True

    def _load_api_curtailments(self) -> None:
        path = self.section.curtailments_file
        if not path or not Path(path).exists():
            return
        try:
            items = json.loads(Path(path).read_text(encoding="utf-8"))
            for raw in items:
                c = msgspec.convert({k: v for k, v in raw.items() if k != "id"}, CurtailConfig)
                cid = str(raw["id"])
                self.curtailments[cid] = _curtailment(c, cid, "api", "")
        except Exception as exc:  # a damaged file loses the API curtailments, never the proxy
            log.error("power: cannot read %s: %s", path, exc)
            self._emit("power_error", f"cannot read the saved curtailments {path}: {exc}")

    def _save_api_curtailments(self) -> None:
        path = self.section.curtailments_file
        if not path:
            return
        now = self.wall()
        keep = [stored_curtailment(c) for c in self.curtailments.values()
                if c.source == "api" and c.until > now - KEEP_OVER_S]
        tmp = Path(f"{path}.tmp")
        try:
            tmp.write_text(json.dumps(keep, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.error("power: cannot save the curtailments to %s: %s", path, exc)

    # --- views ------------------------------------------------------------------------------

    def curtailment_view(self, c: Curtailment) -> dict[str, Any]:
        out = {**stored_curtailment(c), "source": c.source}
        if self.last_plan is not None:
            for d in self.last_plan.decisions:
                if d.kind == "curtailment" and d.figures.get("id") == c.id:
                    out.update(decision=d.decision, status_reason=d.reason, rigs=d.view()["rigs"],
                               rig_count=len(d.rigs), hashrate_at_risk_hs=d.at_risk_hs)
        return out

    def view(self) -> dict[str, Any]:
        """The ``GET /api/v1/power`` document."""
        result = self.refresh()
        ups = []
        for d in result.decisions:
            if d.kind != "ups":
                continue
            state = self.ups[d.name]
            ups.append({"name": d.name, "nut": self._ups_cfg[d.name].nut, **d.view(),
                        "unknown_reason": state.reading.reason or None,
                        "read_at": state.read_at})
        return {
            "order_lead_s": result.order_lead_s,
            "configured_order_lead_s": self.lead.configured_s,
            "learned_order_lead_s": self.lead.learned_s,
            "runtime_margin_s": self.section.runtime_margin_s,
            "hashrate_at_risk_hs": sum(d.at_risk_hs for d in result.decisions if d.kind == "ups"),
            "rent_now_hs": result.input.cover_hs,
            "holding_order": result.input.hold,
            "ups": ups,
            "curtailments": [self.curtailment_view(c) for c in self.curtailments.values()],
        }

    def _emit(self, kind: str, reason: str, **fields: Any) -> None:
        emit_safely(self.events, log, kind, reason, **fields)


POWER_WORDS = {Power.ONLINE: "on mains", Power.BATTERY: "on battery"}  # the events' words


def _num(value: float | None, unit: str) -> str:
    return "?" if value is None else f"{value:.0f}{unit}"


def service_rigs(service: Any) -> RigSource:
    """The proxy's connected rigs as the planner reads them (``CoreView.rig_figures``)."""
    def read() -> list[RigFigure]:
        view = service.view
        if view is None:
            return []
        return [RigFigure(*row) for row in view.rig_figures(service.now())]
    return read


async def start_for_service(service: Any) -> PowerMonitor:
    """Start the power monitor of one proxy; its events go to the proxy's event log."""
    def sink(kind: str, reason: str, **fields: Any) -> None:
        service.events.emit(kind, time.time(), reason=reason, **fields)

    monitor = PowerMonitor(service.config.power, service_rigs(service), events=sink)
    await monitor.start()
    return monitor
