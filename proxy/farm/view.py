"""Merging what the instances report into one farm, in the instances' own REST shapes.

Pure functions over the last answers: no I/O, no clock (``now`` is passed in), so the
summing rules are tested directly.  The rule that matters most: an instance that did not
answer its last poll counts as down, and nothing it reported before is counted as delivered.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# worst first: a pool down on any instance is the operator's first concern
STATE_ORDER = {"down": 0, "degraded": 1, "healthy": 2, "disabled": 3}
SUMMED_POOL_FIELDS = ("rigs", "hashrate", "connections", "connections_ready", "forwarded", "accepted",
                      "accepted_difficulty", "rejected_total", "timeouts", "lost_total", "in_flight")
SUMMED_HISTORY_FIELDS = ("accepted", "rejected", "timeouts", "lost", "accepted_difficulty", "hashrate",
                         "rigs")


@dataclass
class InstanceState:
    """One instance as the farm last saw it."""

    name: str
    api: str
    up: bool = False
    last_ok: float | None = None  # wall time of the last good poll
    last_error: str = "not polled yet"
    status: dict[str, Any] | None = None
    pools: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    polls: int = 0
    failures: int = 0

    def summary(self, now: float) -> dict[str, Any]:
        status = self.status or {}
        return {
            "name": self.name,
            "api": self.api,
            "up": self.up,
            "last_error": None if self.up else self.last_error,
            "last_ok_age_s": round(now - self.last_ok, 3) if self.last_ok is not None else None,
            "rigs_connected": status.get("rigs_connected", 0) if self.up else 0,
            "hashrate": status.get("hashrate", 0.0) if self.up else 0.0,
            # what it reported when last up: shown, never counted
            "last_known_hashrate": status.get("hashrate"),
            "active_pools": status.get("active_pools", []) if self.up else [],
            "version": status.get("version"),
        }


def farm_status(name: str, instances: list[InstanceState], now: float, started: float,
                writes_enabled: bool) -> dict[str, Any]:
    up = [i for i in instances if i.up and i.status is not None]
    counters: Counter[str] = Counter()
    pool_states: dict[str, list[str]] = {}
    for inst in up:
        assert inst.status is not None
        counters.update({k: v for k, v in inst.status.get("counters", {}).items()
                         if isinstance(v, int | float)})
        for pool, state in inst.status.get("pools", {}).items():
            pool_states.setdefault(pool, []).append(state)
    return {
        "instance": name,
        "farm": True,
        "uptime_s": round(now - started, 3),
        "instances_up": len(up),
        "instances_total": len(instances),
        "instances": [i.summary(now) for i in instances],
        "rigs_connected": sum(i.status.get("rigs_connected", 0) for i in up),  # type: ignore[union-attr]
        "rigs_working": sum(i.status.get("rigs_working", 0) for i in up),  # type: ignore[union-attr]
        "hashrate": sum(i.status.get("hashrate", 0.0) for i in up),  # type: ignore[union-attr]
        "active_pools": _union_in_order(i.status.get("active_pools", []) for i in up),  # type: ignore[union-attr]
        "counters": dict(counters),
        "pools": {pool: worst_state(states) for pool, states in pool_states.items()},
        "wall_time": round(now, 3),
        "writes_enabled": writes_enabled,
    }


def _union_in_order(lists: Any) -> list[str]:
    seen: dict[str, None] = {}
    for names in lists:
        for n in names:
            seen.setdefault(n, None)
    return list(seen)


def worst_state(states: list[str]) -> str:
    return min(states, key=lambda s: STATE_ORDER.get(s, -1)) if states else "down"


def farm_pools(instances: list[InstanceState]) -> list[dict[str, Any]]:
    """One row per pool name, summed over the instances that answered, with each instance's
    own state in ``instances``."""
    rows: dict[str, dict[str, Any]] = {}
    per_pool: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for inst in instances:
        if not inst.up:
            continue
        for view in inst.pools:
            per_pool.setdefault(view["name"], []).append((inst.name, view))
    total_hashrate = sum(v.get("hashrate", 0.0) for views in per_pool.values() for _, v in views)
    for name, views in per_pool.items():
        first = views[0][1]
        row: dict[str, Any] = {k: first.get(k) for k in (
            "name", "url", "user", "priority", "weight", "enabled", "standby", "goal_share")}
        for key in SUMMED_POOL_FIELDS:
            row[key] = sum(v.get(key) or 0 for _, v in views)
        row["rejected"] = _sum_counts(v.get("rejected", {}) for _, v in views)
        row["lost"] = _sum_counts(v.get("lost", {}) for _, v in views)
        states = [v.get("state", "down") for _, v in views]
        row["state"] = worst_state(states)
        worst = next(((i, v) for i, v in views if v.get("state") == row["state"]), views[0])
        row["reason"] = (worst[1].get("reason") if len(set(states)) == 1
                         else f"{row['state']} on {worst[0]}: {worst[1].get('reason')}")
        row["last_error"] = next((v.get("last_error") for _, v in views if v.get("last_error")), None)
        row["active"] = any(v.get("active") for _, v in views)
        row["draining"] = any(v.get("draining") for _, v in views)
        row["delivered_share"] = round(row["hashrate"] / total_hashrate, 4) if total_hashrate else 0.0
        # the slowest instance's figure: a farm-wide p99 cannot be rebuilt from p99s
        row["latency_ms"] = {q: _max_or_none(v.get("latency_ms", {}).get(q) for _, v in views)
                             for q in ("p50", "p90", "p99")}
        row["latency_ms"]["note"] = "max over instances"
        ages = [v["last_job_age_s"] for _, v in views if v.get("last_job_age_s") is not None]
        row["last_job_age_s"] = min(ages) if ages else None
        # settings the farm applies everywhere: say when the instances disagree
        row["config_mismatch"] = any(
            v.get(k) != first.get(k) for _, v in views for k in ("priority", "weight", "enabled"))
        row["instances"] = {i: {"state": v.get("state"), "reason": v.get("reason"),
                                "active": v.get("active"), "rigs": v.get("rigs"),
                                "hashrate": v.get("hashrate"), "priority": v.get("priority"),
                                "weight": v.get("weight"), "enabled": v.get("enabled")}
                            for i, v in views}
        rows[name] = row
    return sorted(rows.values(), key=lambda r: (r.get("priority") or 0, r["name"]))


def _sum_counts(dicts: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def _max_or_none(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def farm_events(instances: list[InstanceState], own: list[dict[str, Any]], limit: int,
                kind: str | None = None) -> list[dict[str, Any]]:
    """Every instance's recent events and the farm's own, by time, each with its instance."""
    merged = [e for inst in instances for e in inst.events] + own
    if kind is not None:
        merged = [e for e in merged if e.get("kind") == kind]
    merged.sort(key=lambda e: (e.get("time", 0.0), e.get("instance", ""), e.get("seq", 0)))
    return merged[-limit:]


def _remote_key(row: dict[str, Any]) -> tuple[str, int]:
    host, _, port = str(row.get("remote", "")).rpartition(":")
    return (host, int(port)) if port.isdigit() else (str(row.get("remote", "")), 0)


# the instances' ?sort= keys, on the rows they return (so the farm can merge sorted pages)
RIG_ROW_KEYS: dict[str, Any] = {
    "id": lambda r: (r.get("instance", ""), r.get("id", 0)),
    "worker": lambda r: str(r.get("worker") or "").lower(),
    "remote": _remote_key,
    "pool": lambda r: r.get("pool") or "",
    "difficulty": lambda r: r["difficulty"] if r.get("difficulty") is not None else -1.0,
    "hashrate": lambda r: r.get("hashrate") or 0.0,
    "accepted": lambda r: (r.get("shares") or {}).get("accepted", 0),
    "last_share": lambda r: r["last_share_age_s"] if r.get("last_share_age_s") is not None else math.inf,
}


def merge_rig_pages(pages: list[tuple[str, dict[str, Any]]], offset: int, limit: int,
                    sort: str | None) -> dict[str, Any]:
    """Each instance answered rows ``0 .. offset+limit`` of the same query; the farm's page is
    ``offset .. offset+limit`` of their merge (in the same sort order when one was asked)."""
    rows: list[dict[str, Any]] = []
    for instance, page in pages:
        rows.extend({**row, "instance": instance} for row in page.get("rigs", []))
    if sort:
        key = RIG_ROW_KEYS.get(sort.lstrip("-"))
        if key is not None:
            rows.sort(key=key, reverse=sort.startswith("-"))
    return {"total": sum(int(page.get("total", 0)) for _, page in pages), "offset": offset, "limit": limit,
            "sort": sort, "rigs": rows[offset:offset + limit]}


def merge_history(answers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-minute rows summed over instances (latency: the slowest); events with their instance."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    for instance, answer in answers:
        for row in answer.get("rows", []):
            key = (row["minute"], row["pool"])
            merged = rows.get(key)
            if merged is None:
                rows[key] = {**row, "instances": [instance]}
                continue
            for f in SUMMED_HISTORY_FIELDS:
                if row.get(f) is not None:
                    merged[f] = (merged.get(f) or 0) + row[f]
            for f in ("latency_p50_ms", "latency_p99_ms"):
                merged[f] = _max_or_none([merged.get(f), row.get(f)])
            if row.get("state") is not None:
                merged["state"] = worst_state([s for s in (merged.get("state"), row["state"]) if s])
            merged["instances"].append(instance)
        events.extend({**e, "instance": instance} for e in answer.get("events", []))
    events.sort(key=lambda e: e.get("time", 0.0))
    first = answers[0][1] if answers else {}
    return {"pool": first.get("pool"), "minutes": first.get("minutes"),
            "interval_s": first.get("interval_s"), "backend": "farm",
            "instances": [i for i, _ in answers],
            "rows": sorted(rows.values(), key=lambda r: (r["minute"], r["pool"])), "events": events}
