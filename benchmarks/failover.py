"""Scenario 4, failover: the primary resets, or goes silent, under a mining fleet.

Phases (``--phases``, default all):

- ``reset``, ``stall``: 1,000 rigs folded onto shared upstream connections (the default
  ``extranonce_prefix_size = 2``); the primary resets every connection (then refuses), or
  goes silent (detected after a fixed ``silent_timeout_s``, 4 s).
- ``stall-auto``: the same silent primary with the default ``silent_timeout_s = "auto"``:
  the pool is suspect once a share waits longer than its own latency allows (issue 20);
  compared with ``stall``: the time until every rig is on the backup's job and the shares
  sent to the silent pool (lost: no verdict).
- ``per-rig``: the primary resets under N rigs with one upstream connection per rig
  (``extranonce_prefix_size = 0``), for each N of ``--sizes``. The proxy then holds two
  sockets per rig (the rig's and its pool connection), so N is capped at what its
  open-files limit allows (20,000 here: 9,900 rigs); the cap is reported.
- ``core``: the same per-rig failover in the sans-I/O core alone, no sockets, at each N of
  ``--sizes`` uncapped (``benchmarks/corefailover.py``): how long the core holds the loop.
- ``glue``: the other half of it: the proxy's pool dialer asked for N dials at once (as the
  core's failover call does), real sockets, no core: the longest loop pass it causes.

Each farm is fresh: the primary and the backup validating sim pools, each in its own
process; the proxy with its API under ``benchmarks.loopwatch`` (a watchdog timer in the
proxy's event loop notes every stall of it); a ``proxy.sim.rigs.RigFleet`` (real
double-SHA256 shares) in its own process. Each process has its own open-files limit, so
no process but the proxy holds more than one socket per rig. Every process stamps with
``time.monotonic()`` (CLOCK_MONOTONIC, one clock system-wide), so the fault time taken in
the pool process, the rigs' notify receive times and the proxy's stalls line up.
Figures: the longest stall of the proxy's event loop from the fault to the end of the
phase, time until every rig has the backup's job (at the rigs), rigs disconnected, submits
unanswered, and the proxy's own share accounting from ``/api/v1/pools`` (forwarded =
accepted + rejected + lost + timeouts + in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from proxy.core.sharepath import LOST_UNSENT

from .common import HarnessError, Processes, have_matplotlib, md_table, proxy_config, raise_nofile
from .corefailover import core_main
from .loopwatch import read_stalls
from .poolproc import fast_pool_main, fleet_main, sim_pools_main

USE_UVLOOP = False  # this process only waits and reads: the rigs run in their own
DIFFICULTY = 2.0 ** -28  # ~16 hashes per share: cheap for Python rigs
RESET_BAR_MS = 200.0
SILENT_BAR_MS = 5000.0
STALL_BAR_MS = 100.0
PHASES = ("reset", "stall", "stall-auto", "per-rig", "core", "glue")
SILENT_AUTO_BAR_MS = 1000.0  # issue 20: every rig on the backup's job within 1 s
LOST_RATIO_BAR = 4.0  # ... and at least 4x fewer shares lost than with the fixed window
SIZES = (800, 1600, 3200, 10_000)
SMOKE_SIZES = (200,)
POOLS = ("primary", "backup")
# open files the proxy needs besides two sockets per rig: listeners, API, epoll, log, pipes
PROXY_FD_MARGIN = 200
NOFILE_WANTED = 2 * max(SIZES) + PROXY_FD_MARGIN


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    smoke = ctx.smoke
    phases = [x.strip() for x in (getattr(a, "phases", "") or ",".join(PHASES)).split(",") if x.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise HarnessError(f"unknown failover phase(s) {unknown}; choose from {list(PHASES)}")
    sizes = [int(x) for x in (getattr(a, "sizes", "") or "").split(",") if x.strip()]
    return {"rigs": a.rigs or (100 if smoke else 1000),
            "share_interval_s": 1.0 if smoke else 2.0,
            "silent_timeout_s": 1.0 if smoke else 4.0,
            "mine_after_s": 0.5 if smoke else 2.0,
            "pool_difficulty": DIFFICULTY, "phases": phases,
            "sizes": sizes or list(SMOKE_SIZES if smoke else SIZES),
            "pools": "validating sim pools (proxy.sim.pool), one process each"}


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    logging.getLogger("proxy.sim").setLevel(logging.ERROR)
    phases = []
    timelines: dict[str, list[float]] = {}
    # (fault, rigs asked for, rigs run, extranonce_prefix_size, silent_timeout_s)
    runs = [(fault, p["rigs"], p["rigs"], 2, p["silent_timeout_s"])
            for fault in ("reset", "stall") if fault in p["phases"]]
    if "stall-auto" in p["phases"]:
        runs.append(("stall", p["rigs"], p["rigs"], 2, "auto"))
    if "per-rig" in p["phases"]:
        nofile = raise_nofile(NOFILE_WANTED)  # the children inherit it
        fit = (nofile - PROXY_FD_MARGIN) // 2
        p["nofile_limit"], p["per_rig_max_rigs"] = nofile, fit
        runs += [("reset", n, min(n, fit), 0, p["silent_timeout_s"]) for n in p["sizes"]]
    for fault, asked, n, prefix, silent in runs:
        phase, timeline = await one_fault(ctx, p, fault, n, prefix, silent)
        phase["rigs_asked"] = asked
        phases.append(phase)
        timelines[phase["label"]] = timeline
    result: dict[str, Any] = {"scenario": "failover", "params": p, "phases": phases,
                              "core_only": [await core_only(ctx, n) for n in p["sizes"]]
                              if "core" in p["phases"] else [],
                              "glue_only": [await glue_only(ctx, n) for n in p["sizes"]]
                              if "glue" in p["phases"] else []}
    result["bars"] = bars(result, p)
    if have_matplotlib() and timelines:
        result["plot"] = plot(timelines, ctx.out / "failover_timeline.png")
    return result


async def one_fault(ctx: Any, p: dict[str, Any], fault: str, n: int, prefix: int,
                    silent: float | str) -> tuple[dict[str, Any], list[float]]:
    """One farm, one fault: ``prefix`` is the proxy's extranonce_prefix_size (0: one
    upstream connection per rig), ``silent`` its silent_timeout_s (a number or "auto")."""
    label = (fault if silent != "auto" else f"{fault}-auto") if prefix else f"per-rig {n:,}"
    workdir = ctx.workdir / label.replace(" ", "-").replace(",", "")
    workdir.mkdir(exist_ok=True)
    stalls = workdir / "stalls.txt"
    procs = Processes(workdir)  # closed at the end of this fault, even on error
    fleet = None
    try:
        pools, ports = {}, {}
        for name in POOLS:
            pools[name], info = await procs.start_child(sim_pools_main, [
                {"name": name, "difficulty": DIFFICULTY, "job_interval": 30.0, "extranonce2_size": 8}])
            ports.update(info)
        _, proxy_port, api_port = await procs.start_proxy(proxy_config(
            [{"name": name, "url": f"stratum+tcp://127.0.0.1:{ports[name]}", "user": "bench",
              "priority": i} for i, name in enumerate(POOLS)],
            api=True, silent_timeout_s=silent, failback_hold_s=3600.0,
            # auto: its ceiling is the fixed window of the run (4 s, the default; 1 s in smoke)
            **({"silent_ceiling_s": p["silent_timeout_s"]} if silent == "auto" else {}),
            extranonce_prefix_size=prefix), name="proxy", stalls=stalls)
        # as many shares per second in all as the 1,000-rig phases
        interval = p["share_interval_s"] * max(1.0, n / p["rigs"])
        fleet, _ = await procs.start_child(fleet_main, "127.0.0.1", proxy_port, n, {
            "share_interval": interval, "seed": 7, "concurrency": 256, "connect_timeout": 10.0})
        setup = 30 + n / 50
        await fleet.call("start", timeout=setup)
        await _wait(fleet, setup, "authorized", f"{n} rigs authorized")
        await _wait(fleet, 20 + n / 200, "on_job", "every rig on the primary's job", "primary")
        await _wait(fleet, 30, "accepted", "mining on the primary", min(n, 200))
        mining_since = time.monotonic()
        before = await fleet.call("counts")
        ctx.log(f"failover/{label}: {n} rigs mining on the primary ({before['accepted']} shares "
                f"accepted); injecting the fault")
        fault_at = (await pools["primary"].call(fault, name="primary"))["t"]
        window = (p["silent_timeout_s"] + 10.0 if fault == "stall" else 10.0) + n / 100
        await fleet.call("wait", what="on_job", arg="backup", within=window, timeout=window + 10)
        moved = await fleet.call("moved", t=fault_at, tag="backup")
        await asyncio.sleep(p["mine_after_s"])  # mine on the backup
        stall = read_stalls(stalls, fault_at, time.monotonic())
        stall_before = read_stalls(stalls, mining_since, fault_at)
        ledger = await fleet.call("drain", within=15, timeout=25)
        api = await _api_pools(api_port)
        for _ in range(40):  # let shares already forwarded get their pool answers
            if api is None or all(v["in_flight"] == 0 for v in api.values()):
                break
            await asyncio.sleep(0.05)
            api = await _api_pools(api_port)
        pool_stats = {name: (await child.call("stats"))[name] for name, child in pools.items()}
        phase = {
            "label": label,
            "fault": fault,
            "upstream": "one connection per rig" if prefix == 0 else f"shared (prefix {prefix})",
            "extranonce_prefix_size": prefix,
            "rigs": n,
            "silent_timeout_s": silent,
            "rigs_connected": ledger["connected"],
            "rigs_moved": len(moved),
            "rigs_not_moved": n - len(moved),
            "all_on_backup_ms": round(moved[-1], 1) if len(moved) == n else None,
            "first_on_backup_ms": round(moved[0], 1) if moved else None,
            "median_on_backup_ms": round(moved[len(moved) // 2], 1) if moved else None,
            "loop_stall_ms": stall["stall_ms"],
            "loop_stall": stall,
            "loop_stall_before_fault": stall_before,
            "disconnects": ledger["disconnects"] - before["disconnects"],
            "unanswered_submits": ledger["unanswered"],
            "pending_after_drain": ledger["pending"],
            "submitted": ledger["submitted"],
            "accepted_by_proxy": ledger["accepted"],
            "rejected_by_proxy": ledger["rejected"],
            "reconnect_requests": ledger["reconnect_requests"],
            "set_extranonce_received": ledger["set_extranonce_received"],
            "sim_pools": pool_stats,
            "proxy_pools": api,
        }
        status = await _api_get(api_port, "/api/v1/status") if api_port else None
        phase["proxy_counters"] = (status or {}).get("counters")
        phase["accounting"] = accounting(api, ledger["accepted"], status)
        worst = (f"{stall['stall_ms']} ms (proxy CPU {stall['stall_cpu_ms']} ms of it)"
                 if stall["stall_cpu_ms"] is not None else "none over 5 ms")
        ctx.log(f"  {label}: every rig on the backup's job after {phase['all_on_backup_ms']} ms "
                f"(median {phase['median_on_backup_ms']} ms); longest loop stall {worst}; disconnects "
                f"{phase['disconnects']}, unanswered {phase['unanswered_submits']}, proxy rejects "
                f"{phase['rejected_by_proxy'] or 0}, shares without a pool verdict "
                f"{phase['accounting']['lost_shares']}, unaccounted "
                f"{phase['accounting']['unaccounted_total']}")
        return phase, moved
    finally:
        if fleet is not None:
            with contextlib.suppress(Exception):
                await fleet.call("stop", timeout=15)
        procs.close()


async def _wait(fleet: Any, timeout: float, what: str, text: str, arg: Any = None) -> None:
    if not await fleet.call("wait", what=what, arg=arg, within=timeout, timeout=timeout + 10):
        raise HarnessError(f"fleet: timed out after {timeout:.0f}s waiting for {text}")


async def core_only(ctx: Any, n: int) -> dict[str, Any]:
    """The per-rig failover in the sans-I/O core, N rigs, in a fresh process."""
    procs = Processes(ctx.workdir)
    try:
        _, result = await procs.start_child(core_main, n, DIFFICULTY, timeout=60 + n / 20)
    finally:
        procs.close()
    ctx.log(f"failover/core {n:,} rigs: the failover call {result['fail_ms']} ms, the other "
            f"{result['primary_connections'] - 1:,} closes {result['closes_ms']} ms, backup "
            f"connections' calls {result['backup_calls_ms']} ms (longest {result['backup_call_max_ms']} "
            f"ms); {result['rigs_on_backup']:,} rigs on the backup's job")
    return result


async def glue_only(ctx: Any, n: int) -> dict[str, Any]:
    """N pool dials at once through the proxy's dialer, in a fresh process, to a pool process."""
    raise_nofile(n + PROXY_FD_MARGIN)  # the children inherit it
    procs = Processes(ctx.workdir)
    try:
        _, pool = await procs.start_child(fast_pool_main, DIFFICULTY, 8)
        _, result = await procs.start_child(core_main, n, DIFFICULTY, pool["port"], timeout=60)
    finally:
        procs.close()
    ctx.log(f"failover/glue {n:,} dials at once: all up after {result['all_up_ms']} ms, longest loop "
            f"pass {result['longest_pass_ms']} ms ({result['longest_pass_cpu_ms']} ms CPU, "
            f"{result['cpu_us_per_dial']} us per dial); {result['failed']} failed")
    return result


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


def bars(result: dict[str, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for ph in result["phases"]:
        label = ph["label"]
        if ph["extranonce_prefix_size"] == 0:
            stall = ph["loop_stall_ms"]
            out.append({"bar": f"{label}: no event-loop stall over {STALL_BAR_MS:g} ms",
                        "value": stall, "met": stall < STALL_BAR_MS})
        auto = ph.get("silent_timeout_s") == "auto"
        limit = (RESET_BAR_MS if ph["fault"] == "reset" else SILENT_AUTO_BAR_MS if auto
                 else SILENT_BAR_MS)
        value = ph["all_on_backup_ms"]
        what = ("pool reset" if ph["fault"] == "reset"
                else "pool silent (silent_timeout_s auto)" if auto
                else f"pool silent (detection window {p['silent_timeout_s']:g} s)")
        out.append({"bar": f"{label}, {what}: every rig on the backup's job < {limit:g} ms",
                    "value": value, "met": value is not None and value < limit})
        clean = (ph["disconnects"] == 0 and ph["unanswered_submits"] == 0
                 and ph["accounting"].get("unaccounted_total") in (0, None))
        out.append({"bar": f"{label}: 0 disconnects, 0 unanswered, every share accounted",
                    "value": f"{ph['disconnects']} / {ph['unanswered_submits']} / "
                             f"{ph['accounting'].get('unaccounted_total')}",
                    "met": clean})
    by_label = {ph["label"]: ph for ph in result["phases"]}
    if "stall" in by_label and "stall-auto" in by_label:
        fixed = by_label["stall"]["accounting"]["lost_shares"]
        auto_lost = by_label["stall-auto"]["accounting"]["lost_shares"]
        ratio = fixed / auto_lost if auto_lost else (float("inf") if fixed else None)
        shown = f" ({ratio:.1f}x)" if ratio is not None and ratio != float("inf") else ""
        out.append({"bar": f"silent pool: shares lost with auto at least {LOST_RATIO_BAR:g}x fewer "
                           "than with the fixed window",
                    "value": f"{auto_lost} vs {fixed}{shown}",
                    "met": ratio is not None and ratio >= LOST_RATIO_BAR})
    for c in result["core_only"]:
        out.append({"bar": f"core alone, per-rig {c['rigs']:,}: the failover call < {STALL_BAR_MS:g} ms "
                           "(needed for the loop-stall bar, not enough: the glue adds its own)",
                    "value": c["fail_ms"], "met": c["fail_ms"] < STALL_BAR_MS})
    for g in result["glue_only"]:
        out.append({"bar": f"glue alone, {g['dials']:,} dials at once: longest loop pass "
                           f"< {STALL_BAR_MS:g} ms (needed for the loop-stall bar)",
                    "value": g["longest_pass_ms"], "met": g["longest_pass_ms"] < STALL_BAR_MS})
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for ph in result["phases"]:
        acc = ph["accounting"]
        stall = ph["loop_stall"]
        rows.append([ph["label"], ph["upstream"], ph["rigs"], ph["first_on_backup_ms"],
                     ph["median_on_backup_ms"], ph["all_on_backup_ms"], ph["rigs_not_moved"],
                     stall["stall_ms"], stall["stall_cpu_ms"], stall["stalls_over_10ms"],
                     ph["loop_stall_before_fault"]["stall_ms"], ph["disconnects"],
                     ph["unanswered_submits"],
                     ", ".join(f"{k}:{v}" for k, v in ph["rejected_by_proxy"].items()) or "0",
                     acc.get("lost_shares"), acc.get("unaccounted_total")])
    p = result["params"]
    out = [
        "## failover",
        "",
        f"Primary and backup sim pools (one process each), the proxy, sim rigs mining (one share "
        f"per ~{p['share_interval_s']:g} s per rig at {p['rigs']:,} rigs; larger fleets mine as many "
        f"shares in all); silent detection window {p['silent_timeout_s']:g} s. Times in ms from the "
        "fault, taken at the rigs. *Loop stall*: the longest time the proxy's event loop ran no "
        "timer (a watchdog every 2 ms in the proxy process), from the fault to the end of the phase "
        "(0: none over 5 ms); *CPU* = the proxy's CPU over that stall (less than the stall: it "
        "waited for a core).",
    ]
    if "per_rig_max_rigs" in p:
        out += ["", f"*per-rig*: extranonce_prefix_size = 0, one upstream connection per rig. The proxy "
                f"holds 2 sockets per rig under its open-files limit of {p['nofile_limit']:,}, so at "
                f"most {p['per_rig_max_rigs']:,} rigs (asked: {', '.join(f'{n:,}' for n in p['sizes'])})."]
    if rows:
        out += ["", md_table(["phase", "upstream", "rigs", "first on backup", "median", "all on backup",
                              "not moved", "loop stall", "CPU in it", "stalls > 10 ms",
                              "stall before fault", "disconnects", "unanswered", "proxy rejects (code:n)",
                              "lost (no pool verdict)", "unaccounted"], rows),
                "",
                "*lost* = shares answered to the rig that got no pool verdict: forwarded to the primary "
                "while it was dying or silent (timeouts), or undeliverable (its connection was gone); "
                "from the proxy's /api/v1/pools."]
    if result["core_only"]:
        out += ["", "*core*: the same per-rig reset in the sans-I/O core alone, no sockets, in one "
                "process (benchmarks/corefailover.py); ms of CPU in the core's calls. *failover call*: "
                "the call reporting the first lost primary connection (fails the pool, closes the "
                "others, moves every rig, dials the backup): the loop is held that long. *other "
                "closes*: the other lost connections' calls, summed (one loop pass). *backup calls*: "
                "each backup connection's two calls (connected; handshake answers and job).",
                "",
                md_table(["rigs", "failover call", "other closes", "backup calls (sum)",
                          "longest backup call", "core total", "rigs on backup's job"],
                         [[c["rigs"], c["fail_ms"], c["closes_ms"], c["backup_calls_ms"],
                           c["backup_call_max_ms"], c["core_ms"], c["rigs_on_backup"]]
                          for c in result["core_only"]])]
    if result["glue_only"]:
        out += ["", "*glue*: the proxy's pool dialer (proxy.net.client.Dialer, uvloop) asked for N dials "
                "in one callback, as the core's failover call asks, real sockets to a pool process, a "
                "stub core: the longest loop pass until every connection is up (same watchdog), the "
                "process's CPU in it, and that CPU per dial.",
                "",
                md_table(["dials", "all up", "longest loop pass", "CPU in it", "CPU per dial (us)",
                          "passes > 10 ms", "failed"],
                         [[g["dials"], g["all_up_ms"], g["longest_pass_ms"], g["longest_pass_cpu_ms"],
                           g["cpu_us_per_dial"], g["passes_over_10ms"], g["failed"]]
                          for g in result["glue_only"]])]
    out += ["", md_table(["bar", "value", "met"], [[b["bar"], b["value"], b["met"]] for b in result["bars"]])]
    return "\n".join(out) + "\n"


def plot(timelines: dict[str, list[float]], path: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(timelines), figsize=(5 * len(timelines), 4), squeeze=False)
    for ax, (label, moved) in zip(axes[0], timelines.items()):
        if moved:
            ax.step(moved, range(1, len(moved) + 1), where="post")
        ax.set_title(f"primary {label}" if label in ("reset", "stall") else f"primary reset, {label} rigs")
        ax.set_xlabel("ms since the fault")
        ax.set_ylabel("rigs on the backup's job")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.name)
