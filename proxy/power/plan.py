"""Which rigs are about to go dark, and whether to rent for them now.  Pure: the time and
every figure come in; nothing here reads a clock or a socket.

Per UPS (``plan_ups``):

* ``ok``: on mains (OL); its rigs are listed, nothing is at risk.
* ``watch``: on battery (OB) with more runtime left than an order needs to deliver: the
  at-risk hashrate is shown, no order yet (it comes when the runtime left, less
  ``runtime_margin_s``, falls to the order lead).
* ``order``: on battery with the runtime left (less the margin) within the order lead, or
  the runtime unreported, or LB / FSD / OFF: the rigs' measured hashrate is to be rented now.
* ``unknown``: upsd unreachable, slow or garbled: nothing is decided from it.

Per curtailment window with ``rent``: ``scheduled`` until ``from - order lead``, then
``ordering`` (rent now so the pool sees no dip), ``open`` while it runs, ``over`` after.

``PowerInput`` is what the backfill policy gets: the hashrate to rent now (each rig counted
once, even when on a UPS on battery and curtailed) and whether a live order must be held (a
UPS not back on mains, or one whose last known state was on battery and is now unknown, or a
window not over: the normal recovery path cancels only once power is back and the rigs
deliver).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..rental.units import format_hashrate
from .match import RigMatcher, parse_remote
from .nutproto import Power, UpsReading

MAX_RIGS_SHOWN = 50  # rigs named in a view or an event; the count is always complete


@dataclass(frozen=True)
class RigFigure:
    """One connected rig as the planner sees it: its names, address and measured hashrate."""

    rig_id: int
    workers: tuple[str, ...]
    remote: str
    hashrate: float

    @property
    def label(self) -> str:
        return self.workers[0] if self.workers else f"rig {self.rig_id} ({self.remote})"


@dataclass(frozen=True)
class UpsState:
    """A UPS as the monitor last read it (``read_at`` wall seconds) and its last known state."""

    name: str
    matcher: RigMatcher
    reading: UpsReading
    read_at: float | None = None
    last_known: Power | None = None  # the last state that was not UNKNOWN


@dataclass(frozen=True)
class Curtailment:
    """A planned stop of some rigs (from the config or the API); times in wall seconds."""

    id: str
    name: str
    matcher: RigMatcher
    start: float
    until: float
    reason: str
    rent: bool
    source: str  # "config" | "api"
    workers: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


@dataclass
class Decision:
    """The plan for one UPS or one curtailment."""

    kind: str  # "ups" | "curtailment"
    name: str
    decision: str  # ok | watch | order | unknown | scheduled | ordering | open | over | no_rent
    reason: str
    rigs: list[RigFigure] = field(default_factory=list)
    at_risk_hs: float = 0.0
    cover: bool = False  # its rigs' hashrate is to be rented now
    hold: bool = False  # a live order stays
    figures: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "rigs": [r.label for r in self.rigs[:MAX_RIGS_SHOWN]],
            "rig_count": len(self.rigs),
            "hashrate_at_risk_hs": self.at_risk_hs,
            "rented_for": self.cover,
            **self.figures,
        }

    def event_fields(self) -> dict[str, Any]:
        return {self.kind: self.name, "decision": self.decision, "rigs": [r.label for r in self.rigs[:20]],
                "rig_count": len(self.rigs), "at_risk_hs": self.at_risk_hs, **self.figures}


@dataclass(frozen=True)
class PowerInput:
    """What the backfill policy gets from the power planner."""

    cover_hs: float = 0.0  # hashrate about to be lost, to be rented now
    hold: bool = False  # keep a live order: power is not back (or not known to be back)
    reason: str = ""  # why, for the rental events

    def __bool__(self) -> bool:
        return self.cover_hs > 0 or self.hold


@dataclass
class PowerPlan:
    decisions: list[Decision]
    input: PowerInput
    order_lead_s: float


MatchCache = dict[tuple[tuple[str, ...], str], tuple[int, ...]]
MAX_CACHED = 1 << 18


def group_rigs(matchers: list[RigMatcher], rigs: Iterable[RigFigure],
               cache: MatchCache | None = None) -> list[list[RigFigure]]:
    """The rigs each matcher selects, in one pass over the rigs.  ``cache`` (kept by the
    caller for as long as ``matchers`` do not change) remembers which matchers a rig's names
    and address select: the plan runs every few seconds over every rig, and those do not
    change."""
    cache = {} if cache is None else cache
    if len(cache) > MAX_CACHED:
        cache.clear()
    groups: list[list[RigFigure]] = [[] for _ in matchers]
    for r in rigs:
        key = (r.workers, r.remote)
        hits = cache.get(key)
        if hits is None:
            names, addr = list(r.workers), parse_remote(r.remote)
            hits = cache[key] = tuple(i for i, m in enumerate(matchers) if m.matches(names, r.remote, addr))
        for i in hits:
            groups[i].append(r)
    return groups


def plan_ups(ups: UpsState, mine: list[RigFigure], now: float, lead_s: float, margin_s: float) -> Decision:
    """``mine``: the connected rigs this UPS feeds."""
    hs = sum(r.hashrate for r in mine)
    r = ups.reading
    figures: dict[str, Any] = {"status": r.status or None, "power": r.power.value,
                               "charge": r.charge, "runtime_s": r.runtime_s, "order_lead_s": lead_s}
    n = f"{len(mine)} rig{'s' if len(mine) != 1 else ''}"
    d = Decision("ups", ups.name, "ok", "", mine, 0.0, figures=figures)
    if r.power is Power.UNKNOWN:
        d.decision = "unknown"
        d.hold = ups.last_known in (Power.BATTERY, Power.CRITICAL)
        d.reason = f"UPS {ups.name} unknown ({r.reason}): no order decided from it"
        if d.hold:
            d.reason += "; last seen on battery, so a live order stays"
        return d
    if r.power is Power.ONLINE:
        d.reason = f"UPS {ups.name} on mains ({r.status}): {n}, {format_hashrate(hs)}, nothing at risk"
        return d
    d.at_risk_hs = hs
    d.hold = True
    what = f"{n}, {format_hashrate(hs)} at risk"
    if r.power is Power.CRITICAL:
        d.decision, d.cover = "order", True
        d.reason = f"UPS {ups.name} {r.status}: the rigs go dark now; {what}: renting it at once"
        return d
    if r.runtime_s is None:
        d.decision, d.cover = "order", True
        d.reason = f"UPS {ups.name} on battery, runtime not reported; {what}: renting it now"
        return d
    left = r.runtime_s - max(0.0, now - (ups.read_at if ups.read_at is not None else now))
    dark_in = left - margin_s
    figures["dark_in_s"] = round(dark_in, 1)
    if dark_in <= lead_s:
        d.decision, d.cover = "order", True
        d.reason = (f"UPS {ups.name} on battery: {left:.0f}s runtime less {margin_s:g}s margin = "
                    f"{max(dark_in, 0):.0f}s, within the order lead {lead_s:g}s; {what}: renting it now")
    else:
        d.decision = "watch"
        d.reason = (f"UPS {ups.name} on battery: {left:.0f}s runtime less {margin_s:g}s margin = "
                    f"{dark_in:.0f}s, more than the order lead {lead_s:g}s; {what}: "
                    f"renting in {dark_in - lead_s:.0f}s if still on battery")
    return d


def plan_curtailment(c: Curtailment, mine: list[RigFigure], now: float, lead_s: float) -> Decision:
    """``mine``: the connected rigs the window stops."""
    hs = sum(r.hashrate for r in mine)
    figures = {"id": c.id, "from": c.start, "until": c.until, "reason_given": c.reason,
               "rent": c.rent, "source": c.source, "order_lead_s": lead_s}
    d = Decision("curtailment", c.name or c.id, "scheduled", "", mine, hs, figures=figures)
    label = f"curtailment {c.name or c.id}" + (f" ({c.reason})" if c.reason else "")
    n = f"{len(mine)} rig{'s' if len(mine) != 1 else ''}, {format_hashrate(hs)}"
    if now >= c.until:
        d.decision, d.at_risk_hs = "over", 0.0
        d.reason = f"{label} over; the order (if any) is cancelled once the rigs deliver again"
    elif not c.rent:
        d.decision = "no_rent"
        d.reason = f"{label}: {n}; rent = false, not covered"
    elif now >= c.start:
        d.decision, d.cover, d.hold = "open", True, True
        d.reason = f"{label} open for {c.until - now:.0f}s more: {n} still delivering; the order stays"
    elif now >= c.start - lead_s:
        d.decision, d.cover, d.hold = "ordering", True, True
        d.reason = (f"{label} opens in {c.start - now:.0f}s, within the order lead {lead_s:g}s: "
                    f"{n}: renting it now")
    else:
        d.reason = f"{label} opens in {c.start - now:.0f}s: {n}; renting {lead_s:g}s before"
    return d


def plan(ups: list[UpsState], curtailments: list[Curtailment], rigs: list[RigFigure], now: float,
         lead_s: float, margin_s: float, cache: MatchCache | None = None) -> PowerPlan:
    """Every UPS and curtailment, and the one input the backfill policy gets (``cache``: see
    ``group_rigs``; reset it when the UPSes or curtailments change)."""
    groups = group_rigs([u.matcher for u in ups] + [c.matcher for c in curtailments], rigs, cache)
    decisions = [plan_ups(u, g, now, lead_s, margin_s) for u, g in zip(ups, groups)]
    decisions += [plan_curtailment(c, g, now, lead_s) for c, g in zip(curtailments, groups[len(ups):])]
    covered: dict[int, float] = {}
    for d in decisions:
        if d.cover:
            covered.update((r.rig_id, r.hashrate) for r in d.rigs)
    cover = sum(covered.values())
    reasons = [d.reason for d in decisions if d.cover]
    holds = [d.reason for d in decisions if d.hold and not d.cover]
    hold = any(d.hold for d in decisions)
    return PowerPlan(decisions, PowerInput(cover, hold, "; ".join(reasons or holds)), lead_s)


class LeadEstimator:
    """How long an order takes to deliver: the configured ``order_lead_s``, raised to the
    slowest of the last ``keep`` deliveries seen (placed -> delivering 90% of its limit)
    when learning is on.  The slowest, not the mean: ordering late leaves a dip."""

    def __init__(self, configured_s: float, learn: bool = True, keep: int = 5) -> None:
        self.configured_s = configured_s
        self.learn = learn
        self.seen: deque[float] = deque(maxlen=keep)

    def observe(self, delivery_s: float) -> None:
        if delivery_s >= 0:
            self.seen.append(delivery_s)

    @property
    def learned_s(self) -> float | None:
        return max(self.seen) if self.seen else None

    def lead_s(self) -> float:
        learned = self.learned_s
        if not self.learn or learned is None:
            return self.configured_s
        return max(self.configured_s, learned)
