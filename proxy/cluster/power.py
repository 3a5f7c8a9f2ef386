"""The farm's power view: each instance's power plan in its etcd summary, summed by the leader.

Behind HAProxy the rigs one UPS feeds are spread over the instances, and each instance sees
only its own rigs: its power monitor knows the at-risk hashrate of *its* rigs.  So:

* ``member_power`` (every instance with ``[power]``): the figures of its last plan, published
  in its member summary: per UPS the decision, power state, runtime, at-risk hashrate; per
  curtailment the decision and at-risk hashrate; the instance's rent-now hashrate, hold flag
  and order lead.
* ``farm_power`` (pure): the farm-wide ``PowerInput`` from the members' published figures:
  rent-now summed over the members (a rig connects to one instance, so each is counted once),
  hold if any member holds.  A member whose figures the leader has not seen change for
  ``STALE_BEATS`` of its publish periods is *unknown*: nothing is rented for it (the same rule
  as the planner's unknown UPS), and a live order stays if its last figures held one.
* ``ClusterPower``: samples the members on every beat (by this instance's monotonic clock, so
  no two machines' clocks are compared) and is what the leader's ``BackfillController`` gets
  as ``power=``: the same policy path as a single instance, so the order comes before the
  rigs go dark and the normal recovery rules cancel it.  While the instances disagree on a
  UPS's power state (they poll it at different moments) nothing is rented for a settling
  time, so the order covers every instance's part at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..core.events import emit_safely
from ..power.plan import PowerInput
from ..rental.units import format_hashrate

log = logging.getLogger("proxy.cluster.power")

STALE_BEATS = 3  # a member's power figures older than this many of its publish periods: unknown
MAX_NAMED = 20  # instances / UPSes named in a reason


def member_power(monitor: Any, publish_s: float) -> dict[str, Any]:
    """What one instance publishes of its power plan (``monitor``: its ``PowerMonitor``)."""
    result = monitor.refresh()
    ups, curtailments = [], []
    for d in result.decisions:
        row = {"name": d.name, "decision": d.decision, "at_risk_hs": d.at_risk_hs, "rig_count": len(d.rigs),
               "rent_now": d.cover, "hold": d.hold}
        if d.kind == "ups":
            row.update(power=d.figures.get("power"), status=d.figures.get("status"),
                       runtime_s=d.figures.get("runtime_s"), dark_in_s=d.figures.get("dark_in_s"))
            ups.append(row)
        else:
            row.update(id=d.figures.get("id"), start=d.figures.get("from"), until=d.figures.get("until"))
            curtailments.append(row)
    return {"rent_now_hs": result.input.cover_hs, "hold": result.input.hold, "reason": result.input.reason,
            "order_lead_s": result.order_lead_s, "publish_s": publish_s, "ups": ups,
            "curtailments": curtailments}


def farm_power(members: dict[str, dict[str, Any]], ages: dict[str, float],
               read_every_s: float = 0.0) -> tuple[PowerInput, dict[str, Any]]:
    """The farm-wide input and its view.  ``members``: name -> published ``member_power``
    (members without ``[power]`` are absent); ``ages``: name -> seconds since this instance
    last saw that member's figures change (absent: never seen change, i.e. unknown);
    ``read_every_s``: how often this instance reads the members (added to the limit)."""
    cover, hold = 0.0, False
    rows: dict[str, dict[str, Any]] = {}  # UPS / curtailment -> farm figures
    unknown, covering, holding = [], [], []
    for name in sorted(members):
        p = members[name]
        limit = STALE_BEATS * float(p.get("publish_s") or 0) + read_every_s
        age = ages.get(name)
        if age is None or age > limit or p.get("error"):
            unknown.append(name)
            if p.get("hold"):
                hold = True
                holding.append(f"{name} (last figures held an order)")
            continue
        cover += float(p.get("rent_now_hs") or 0.0)
        if p.get("hold"):
            hold = True
        for kind in ("ups", "curtailments"):
            for d in p.get(kind) or []:
                key = f"{'UPS' if kind == 'ups' else 'curtailment'} {d.get('name')}"
                row = rows.setdefault(key, {"kind": kind, "name": d.get("name"), "at_risk_hs": 0.0,
                                            "rig_count": 0, "instances": {}})
                row["at_risk_hs"] += float(d.get("at_risk_hs") or 0.0)
                row["rig_count"] += int(d.get("rig_count") or 0)
                row["instances"][name] = {k: d.get(k) for k in (
                    "decision", "at_risk_hs", "rig_count", "power", "status", "runtime_s", "dark_in_s")
                    if k in d}
                if d.get("rent_now"):
                    covering.append((key, name, float(d.get("at_risk_hs") or 0.0)))
                elif d.get("hold"):
                    holding.append(f"{key} on {name} ({d.get('decision')})")
    reason = _reason(covering, holding, unknown, cover)
    # a UPS the fresh members see in different power states (unknown included: one instance
    # has read it on battery, another could not read it yet)
    disagree = {r["name"]: states for r in rows.values() if r["kind"] == "ups" and len(states := {
        str(d.get("power")) for d in r["instances"].values()}) > 1}
    view = {"rent_now_hs": cover, "holding_order": hold, "reason": reason or None,
            "unknown_instances": unknown,
            "disagreeing_ups": {n: sorted(v) for n, v in sorted(disagree.items())},
            "instances": {n: {"rent_now_hs": members[n].get("rent_now_hs"), "hold": members[n].get("hold"),
                              "order_lead_s": members[n].get("order_lead_s"), "age_s": ages.get(n),
                              "unknown": n in unknown} for n in sorted(members)},
            "ups": [r for r in rows.values() if r["kind"] == "ups"],
            "curtailments": [r for r in rows.values() if r["kind"] == "curtailments"]}
    return PowerInput(cover, hold, reason), view


def _reason(covering: list[tuple[str, str, float]], holding: list[str], unknown: list[str],
            cover: float) -> str:
    parts: list[str] = []
    if covering:
        by_source: dict[str, list[str]] = {}
        for key, name, hs in covering:
            by_source.setdefault(key, []).append(f"{name} {format_hashrate(hs)}")
        named = [f"{k} on {', '.join(v[:MAX_NAMED])}" for k, v in list(by_source.items())[:MAX_NAMED]]
        parts.append(f"farm power: {format_hashrate(cover)} to rent now ({'; '.join(named)})")
    elif holding:
        parts.append(f"farm power not back: {'; '.join(holding[:MAX_NAMED])}")
    if unknown:
        parts.append(f"power figures of {', '.join(unknown[:MAX_NAMED])} unknown (stale or never "
                     "published): nothing rented for them")
    return "; ".join(parts)


class ClusterPower:
    """The members' power figures as this instance last read them; the leader's controller
    calls ``input()`` on each step and ``order_delivered()`` when an order delivers."""

    def __init__(self, node: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self.seen: dict[str, tuple[Any, float]] = {}  # member -> (its summary time, when it changed)
        self._said: tuple[bool, bool, tuple[str, ...]] | None = None
        self._disagree_since: float | None = None

    def sample(self) -> None:
        """After each read of the members: note whose summary changed."""
        now = self.clock()
        members = self.node.members
        for name in list(self.seen):
            if name not in members:
                del self.seen[name]
        for name, m in members.items():
            stamp = m.get("time")
            old = self.seen.get(name)
            if old is None:
                # first sight: its age is unknown until it changes (a frozen member would
                # otherwise look fresh to a newly started leader)
                self.seen[name] = (stamp, float("-inf"))
            elif old[0] != stamp:
                self.seen[name] = (stamp, now)

    def settled(self, result: PowerInput, view: dict[str, Any]) -> tuple[PowerInput, dict[str, Any]]:
        """The instances poll one UPS at different moments and publish a beat apart: while
        they disagree on its power state (one on battery, another still on mains), nothing is
        rented for a settling time (their next figures), so the order is for the whole farm's
        part, not for the first instance to notice.  A disagreement that lasts longer (two
        upsd answering differently) is planned with as it stands."""
        disagree = view["disagreeing_ups"]
        if not disagree:
            self._disagree_since = None
            return result, view
        now = self.clock()
        if self._disagree_since is None:
            self._disagree_since = now
        settle_s = STALE_BEATS * max([float(m["power"].get("publish_s") or 0)
                                      for m in self.node.members.values()
                                      if isinstance(m.get("power"), dict)] or [0.0]) + self.node.beat_s
        waited = now - self._disagree_since
        if waited >= settle_s or result.cover_hs <= 0:
            return result, view
        names = ", ".join(f"UPS {n} ({'/'.join(v)})" for n, v in list(disagree.items())[:MAX_NAMED])
        why = (f"the instances disagree on {names}: waiting {settle_s - waited:.1f}s more for their "
               f"figures before renting {format_hashrate(result.cover_hs)}")
        return PowerInput(0.0, result.hold, why), {**view, "rent_now_hs": 0.0, "reason": why}

    def compute(self) -> tuple[PowerInput, dict[str, Any]]:
        now = self.clock()
        members = {n: m["power"] for n, m in self.node.members.items() if isinstance(m.get("power"), dict)}
        ages = {n: now - t for n, (_, t) in self.seen.items() if t != float("-inf")}
        return farm_power(members, ages, self.node.beat_s)

    def input(self) -> PowerInput:
        result, view = self.settled(*self.compute())
        said = (result.cover_hs > 0, result.hold, tuple(view["unknown_instances"]))
        if said != self._said and (self._said is not None or any(said[:2]) or said[2]):
            self._emit(result, view)  # on each change (and at first only when not quiet)
        self._said = said
        return result

    def _emit(self, result: PowerInput, view: dict[str, Any]) -> None:
        instances = sorted({n for r in view["ups"] + view["curtailments"] for n, d in r["instances"].items()
                            if d.get("decision") in ("order", "watch", "ordering", "open")})
        ups = sorted(r["name"] for r in view["ups"] if any(
            d.get("decision") != "ok" for d in r["instances"].values()))
        reason = result.reason or "farm power: nothing at risk, no order held"
        emit_safely(self._sink, log, "power_farm", reason,
                    rent_now_hs=result.cover_hs, hold=result.hold, instances=instances, ups=ups,
                    unknown_instances=view["unknown_instances"])

    def _sink(self, kind: str, reason: str, **fields: Any) -> None:
        self.node.service.events.emit(kind, time.time(), reason=reason, **fields)

    def order_delivered(self, seconds: float) -> None:
        """An order delivered after ``seconds``: this instance's monitor learns the lead from it
        (it publishes the lead it plans with; the others keep theirs)."""
        monitor = getattr(self.node.service, "power", None)
        if monitor is not None:
            monitor.order_delivered(seconds)
