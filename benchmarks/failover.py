"""Scenario 4, failover: the primary resets, or goes silent, under a mining fleet.

A fresh farm per fault: two validating sim pools (primary, backup) in one process, the
proxy in another, and a ``proxy.sim.rigs.RigFleet`` (real double-SHA256 shares) in this
one. The load generator runs on the default asyncio loop, whose clock is
``time.monotonic()`` (CLOCK_MONOTONIC, system-wide), so the fault time taken in the pool
process and the rigs' notify receive times are on one clock. Figures: time until every
rig has the backup's job, rigs disconnected, submits unanswered, and the proxy's own
share accounting from ``/api/v1/pools`` (forwarded = accepted + rejected + lost +
timeouts + in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from proxy.core.sharepath import LOST_UNSENT

from .common import HarnessError, Processes, have_matplotlib, md_table, proxy_config
from .poolproc import sim_pools_main

USE_UVLOOP = False  # rigs stamp with loop.time(): keep it time.monotonic()
DIFFICULTY = 2.0 ** -28  # ~16 hashes per share: cheap for 1,000 Python rigs
RESET_BAR_MS = 200.0
SILENT_BAR_MS = 5000.0


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    smoke = ctx.smoke
    return {"rigs": a.rigs or (100 if smoke else 1000),
            "share_interval_s": 1.0 if smoke else 2.0,
            "silent_timeout_s": 1.0 if smoke else 4.0,
            "mine_after_s": 0.5 if smoke else 2.0,
            "pool_difficulty": DIFFICULTY, "faults": ["reset", "stall"],
            "pools": "validating sim pools (proxy.sim.pool)"}


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    logging.getLogger("proxy.sim").setLevel(logging.ERROR)
    phases = []
    timelines: dict[str, list[float]] = {}
    for fault in p["faults"]:
        phase, timeline = await one_fault(ctx, p, fault)
        phases.append(phase)
        timelines[fault] = timeline
    result: dict[str, Any] = {"scenario": "failover", "params": p, "phases": phases}
    result["bars"] = bars(phases, p)
    if have_matplotlib():
        result["plot"] = plot(timelines, ctx.out / "failover_timeline.png")
    return result


async def one_fault(ctx: Any, p: dict[str, Any], fault: str) -> tuple[dict[str, Any], list[float]]:
    from proxy.sim.rigs import RigFleet

    n = p["rigs"]
    (ctx.workdir / fault).mkdir(exist_ok=True)
    procs = Processes(ctx.workdir / fault)  # closed at the end of this fault, even on error
    fleet: RigFleet | None = None
    try:
        pools, ports = await procs.start_child(sim_pools_main, [
            {"name": name, "difficulty": DIFFICULTY, "job_interval": 30.0, "extranonce2_size": 8}
            for name in ("primary", "backup")])
        proxy, proxy_port, api_port = await procs.start_proxy(proxy_config(
            [{"name": name, "url": f"stratum+tcp://127.0.0.1:{ports[name]}", "user": "bench",
              "priority": i} for i, name in enumerate(("primary", "backup"))],
            api=True, silent_timeout_s=p["silent_timeout_s"], failback_hold_s=3600.0),
            name=f"proxy-{fault}")
        fleet = RigFleet("127.0.0.1", proxy_port, n, share_interval=p["share_interval_s"], seed=7,
                         concurrency=256, connect_timeout=10.0)
        await fleet.start()
        await fleet.wait_until(lambda: fleet.authorized == n, 30 + n / 50, f"{n} rigs authorized")
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == n, 20,
                               "every rig on the primary's job")
        await fleet.wait_until(lambda: fleet.accepted >= min(n, 200), 30, "mining on the primary")
        before = {"disconnects": fleet.disconnects, "lost": fleet.lost,
                  "submitted": fleet.submitted, "accepted": fleet.accepted}
        ctx.log(f"failover/{fault}: {n} rigs mining on the primary "
                f"({before['accepted']} shares accepted); injecting the fault")
        fault_at = (await pools.call(fault, name="primary"))["t"]
        window = p["silent_timeout_s"] + 10.0 if fault == "stall" else 10.0
        try:
            await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == n, window,
                                   "every rig on the backup's job")
        except TimeoutError:
            pass  # reported as rigs_not_moved below
        times = fleet.first_notify_after(fault_at, b"backup")
        moved = sorted((t - fault_at) * 1000 for t in times if t is not None)
        await asyncio.sleep(p["mine_after_s"])  # mine on the backup
        await fleet.drain(15)
        api = await _api_pools(api_port)
        for _ in range(40):  # let shares already forwarded get their pool answers
            if api is None or all(v["in_flight"] == 0 for v in api.values()):
                break
            await asyncio.sleep(0.05)
            api = await _api_pools(api_port)
        pool_stats = await pools.call("stats")
        rejected = fleet.rejected
        phase = {
            "fault": fault,
            "rigs": n,
            "rigs_connected": fleet.connected,
            "rigs_moved": len(moved),
            "rigs_not_moved": n - len(moved),
            "all_on_backup_ms": round(moved[-1], 1) if len(moved) == n else None,
            "first_on_backup_ms": round(moved[0], 1) if moved else None,
            "median_on_backup_ms": round(moved[len(moved) // 2], 1) if moved else None,
            "disconnects": fleet.disconnects - before["disconnects"],
            "unanswered_submits": fleet.unanswered(),
            "pending_after_drain": fleet.pending,
            "submitted": fleet.submitted,
            "accepted_by_proxy": fleet.accepted,
            "rejected_by_proxy": {str(k): v for k, v in rejected.items()},
            "reconnect_requests": fleet.reconnect_requests,
            "set_extranonce_received": fleet.set_extranonce_received,
            "sim_pools": pool_stats,
            "proxy_pools": api,
        }
        status = await _api_get(api_port, "/api/v1/status") if api_port else None
        phase["proxy_counters"] = (status or {}).get("counters")
        phase["accounting"] = accounting(api, fleet.accepted, status)
        timeline = moved
        ctx.log(f"  {fault}: every rig on the backup's job after {phase['all_on_backup_ms']} ms "
                f"(median {phase['median_on_backup_ms']} ms); disconnects {phase['disconnects']}, "
                f"unanswered {phase['unanswered_submits']}, proxy rejects "
                f"{phase['rejected_by_proxy'] or 0}, shares without a pool verdict "
                f"{phase['accounting']['lost_shares']}, unaccounted "
                f"{phase['accounting']['unaccounted_total']}")
        return phase, timeline
    finally:
        if fleet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fleet.stop(), 15)
        procs.close()


async def _api_get(port: int, path: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as r:
        if r.status != 200:
            raise HarnessError(f"{path} answered {r.status}")
        return await r.json()


async def _api_pools(port: int | None) -> dict[str, Any] | None:
    if port is None:
        return None
    data = await _api_get(port, "/api/v1/pools")
    keys = ("state", "last_error", "forwarded", "accepted", "rejected", "rejected_total", "lost",
            "lost_total", "timeouts", "in_flight", "latency_ms_since_start")
    return {pv["name"]: {k: pv.get(k) for k in keys} for pv in data.get("pools", [])}


# lost because its pool connection was gone before it could be written; counted in
# ``forwarded`` (every share owed to the pool) and in ``lost`` under this reason
UNDELIVERABLE = LOST_UNSENT


def accounting(api: dict[str, Any] | None, rig_accepted: int,
               status: dict[str, Any] | None) -> dict[str, Any]:
    """Every share the proxy accepted from a rig ends as exactly one of: accepted or rejected
    by a pool, timed out (no verdict from a silent pool), lost in flight (connection died
    with the share written), undeliverable (its pool connection was gone), or below the
    pool's target (never forwarded). ``lost_shares`` = no verdict from any pool.

    A timed-out share may also be counted under a ``silent...`` lost reason: counted once
    here. ``in_flight`` in the API counts every request awaiting an answer (handshake
    requests to a silent pool too), so it only covers a shortfall, never an excess.
    """
    if api is None:
        return {"available": False, "lost_shares": None, "unaccounted_total": None}
    per_pool = {}
    for name, v in api.items():
        reasons = v.get("lost") or {}
        silent_lost = sum(n for reason, n in reasons.items() if reason.startswith("silent"))
        undeliverable = reasons.get(UNDELIVERABLE, 0)
        lost_in_flight = v["lost_total"] - silent_lost - undeliverable
        settled = v["accepted"] + v["rejected_total"] + v["timeouts"] + lost_in_flight + undeliverable
        unsettled = v["forwarded"] - settled
        if unsettled > 0:
            unsettled -= min(unsettled, v["in_flight"])
        per_pool[name] = {"forwarded": v["forwarded"], "accepted": v["accepted"],
                          "rejected": v["rejected_total"], "timeouts": v["timeouts"],
                          "lost_in_flight": lost_in_flight, "undeliverable": undeliverable,
                          "lost_reasons": reasons, "in_flight": v["in_flight"],
                          "unaccounted": unsettled}
    below = int(((status or {}).get("counters") or {}).get("below_pool_target", 0))
    handled = sum(x["forwarded"] for x in per_pool.values()) + below
    return {
        "available": True, "per_pool": per_pool, "below_pool_target": below,
        "rig_accepted": rig_accepted,
        "lost_shares": sum(x["timeouts"] + x["lost_in_flight"] + x["undeliverable"]
                           for x in per_pool.values()),
        # pool-side ledger gaps plus rig-accepted shares the proxy has no record of
        "unaccounted_total": sum(x["unaccounted"] for x in per_pool.values())
        + (rig_accepted - handled),
    }


def bars(phases: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for ph in phases:
        limit = RESET_BAR_MS if ph["fault"] == "reset" else SILENT_BAR_MS
        value = ph["all_on_backup_ms"]
        what = ("pool reset" if ph["fault"] == "reset"
                else f"pool silent (detection window {p['silent_timeout_s']:g} s)")
        out.append({"bar": f"{what}: every rig on the backup's job < {limit:g} ms",
                    "value": value, "met": value is not None and value < limit})
        clean = (ph["disconnects"] == 0 and ph["unanswered_submits"] == 0
                 and ph["accounting"].get("unaccounted_total") in (0, None))
        out.append({"bar": f"{ph['fault']}: 0 disconnects, 0 unanswered, every share accounted",
                    "value": f"{ph['disconnects']} / {ph['unanswered_submits']} / "
                             f"{ph['accounting'].get('unaccounted_total')}",
                    "met": clean})
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for ph in result["phases"]:
        acc = ph["accounting"]
        rows.append([ph["fault"], ph["rigs"], ph["first_on_backup_ms"], ph["median_on_backup_ms"],
                     ph["all_on_backup_ms"], ph["rigs_not_moved"], ph["disconnects"],
                     ph["unanswered_submits"],
                     ", ".join(f"{k}:{v}" for k, v in ph["rejected_by_proxy"].items()) or "0",
                     acc.get("lost_shares"), acc.get("unaccounted_total")])
    p = result["params"]
    return "\n".join([
        "## failover",
        "",
        f"{p['rigs']:,} sim rigs (one share per ~{p['share_interval_s']:g} s each), primary and "
        f"backup sim pools; silent detection window {p['silent_timeout_s']:g} s. Times in ms from "
        "the fault.",
        "",
        md_table(["fault", "rigs", "first on backup", "median", "all on backup", "not moved",
                  "disconnects", "unanswered", "proxy rejects (code:n)",
                  "lost (no pool verdict)", "unaccounted"], rows),
        "",
        "*lost* = shares answered to the rig that got no pool verdict: forwarded to the primary "
        "while it was dying or silent (timeouts), or undeliverable (its connection was gone); "
        "from the proxy's /api/v1/pools.",
        "",
        md_table(["bar", "value", "met"], [[b["bar"], b["value"], b["met"]] for b in result["bars"]]),
    ]) + "\n"


def plot(timelines: dict[str, list[float]], path: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(timelines), figsize=(5 * len(timelines), 4), squeeze=False)
    for ax, (fault, moved) in zip(axes[0], timelines.items()):
        if moved:
            ax.step(moved, range(1, len(moved) + 1), where="post")
        ax.set_title(f"primary {fault}")
        ax.set_xlabel("ms since the fault")
        ax.set_ylabel("rigs on the backup's job")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.name)
