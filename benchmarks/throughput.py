"""Scenario 2, throughput: the highest validated shares/s one proxy process sustains.

The offered rate ramps up in steps; a step is *sustained* when the load generator offered
the rate, the proxy answered (validated) the shares within the step with no growing
backlog, and the pool received every forwarded share. Proxy CPU seconds per 1,000 shares
come from /proc/<pid>/stat (utime + stime) over each step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import loadgen
from .common import (
    cpu_seconds,
    have_matplotlib,
    md_table,
    proxy_config,
    self_cpu_seconds,
)
from .poolproc import fast_pool_main

USE_UVLOOP = True
DIFFICULTY = 2.0 ** -32
POOL_E2_SIZE = 8
BAR = 20_000
FULL_RAMP = [5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000]
SMOKE_RAMP = [500, 1_000]
BACKLOG_LIMIT_S = 0.1  # unanswered shares at the end of a step, in seconds of offered load


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    ramp = SMOKE_RAMP if ctx.smoke else FULL_RAMP
    if a.rate:
        ramp = [r for r in ramp if r < a.rate] + [a.rate]
    return {"ramp": ramp, "step_s": a.duration or (1.0 if ctx.smoke else 4.0),
            "rigs": a.rigs or (20 if ctx.smoke else 200),
            "pool": "fast answering pool (benchmarks/poolproc.py)", "pool_difficulty": DIFFICULTY,
            "backlog_limit_s": BACKLOG_LIMIT_S, "instances": max(1, a.instances)}


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    procs = ctx.procs
    pool, info = await procs.start_child(fast_pool_main, DIFFICULTY, POOL_E2_SIZE)
    proxies, proxy_port = await procs.start_proxies(proxy_config(
        [{"name": "fast", "url": f"stratum+tcp://127.0.0.1:{info['port']}", "user": "bench"}],
        keepalive_s=3600.0), p["instances"])
    pids = [x.pid for x in proxies]
    await pool.call("reset", record=False)
    gen = loadgen.LoadGen("127.0.0.1", proxy_port, p["rigs"])
    ctx.log(f"throughput: {p['rigs']} rigs, ramp {p['ramp']}/s, {p['step_s']:g} s per step")
    steps: list[dict[str, Any]] = []
    try:
        await gen.connect()
        for rate in p["ramp"]:
            stats0 = await pool.call("stats")
            cpu_p0, cpu_pool0, cpu_self0 = _cpu(pids), cpu_seconds(pool.pid), self_cpu_seconds()
            t0 = time.monotonic()
            phase = asyncio.ensure_future(gen.run_phase(rate, p["step_s"], record=False,
                                                        drain_timeout=3.0))
            # the backlog when the last share of the step is written
            backlog_at_end = await _backlog_when_sent(gen, phase, rate * p["step_s"])
            res = await phase
            wall = time.monotonic() - t0
            cpu_p = _cpu(pids) - cpu_p0
            cpu_pool = cpu_seconds(pool.pid) - cpu_pool0
            cpu_self = self_cpu_seconds() - cpu_self0
            stats1 = await pool.call("stats")
            pool_got = stats1["submits"] - stats0["submits"]
            offered_ok = res.sent / res.send_elapsed >= 0.95 * rate if res.send_elapsed else False
            validated_rate = res.accepted / res.send_elapsed if res.send_elapsed else 0.0
            backlog_ok = backlog_at_end <= max(50, BACKLOG_LIMIT_S * rate)
            sustained = (offered_ok and backlog_ok and res.answered == res.sent
                         and res.accepted == res.sent and pool_got == res.sent)
            step = {
                "offered_rate": rate, "sent": res.sent, "send_rate": round(res.sent / res.send_elapsed, 1),
                "answered": res.answered, "accepted": res.accepted, "pool_received": pool_got,
                "validated_rate": round(validated_rate, 1), "backlog_at_end": backlog_at_end,
                "proxy_cpu_s": round(cpu_p, 3),
                "proxy_cpu_s_per_1000": round(1000 * cpu_p / res.accepted, 4) if res.accepted else None,
                "proxy_cpu_util": round(cpu_p / wall, 3),
                "pool_cpu_util": round(cpu_pool / wall, 3),
                "loadgen_cpu_util": round(cpu_self / wall, 3),
                "skipped_nonces": res.skipped, "sustained": sustained,
                "loadgen_limited": not offered_ok,
            }
            steps.append(step)
            ctx.log(f"  {rate:>6}/s offered: sent {step['send_rate']:.0f}/s validated "
                    f"{step['validated_rate']:.0f}/s backlog {backlog_at_end} pool got "
                    f"{pool_got}/{res.sent} proxy cpu {step['proxy_cpu_util']:.0%} "
                    f"({step['proxy_cpu_s_per_1000']} s/1k) pool cpu {step['pool_cpu_util']:.0%} "
                    f"loadgen cpu {step['loadgen_cpu_util']:.0%} -> "
                    f"{'sustained' if sustained else 'NOT sustained'}")
            if not sustained:
                break
    finally:
        gen.close()
    good = [s for s in steps if s["sustained"]]
    best = max(good, key=lambda s: s["validated_rate"]) if good else None
    first_bad = next((s for s in steps if not s["sustained"]), None)
    result = {
        "scenario": "throughput", "params": p, "steps": steps,
        "max_sustained_rate": best["validated_rate"] if best else 0.0,
        "max_sustained_offered": best["offered_rate"] if best else 0,
        "cpu_s_per_1000_shares": best["proxy_cpu_s_per_1000"] if best else None,
        "limit_reason": (None if first_bad is None else
                         "load generator could not offer the rate" if first_bad["loadgen_limited"]
                         else "proxy backlog grew / shares not all answered"),
        "ramp_exhausted": first_bad is None,
    }
    # a projection from CPU cost: what one fully busy core would validate
    if best and best["proxy_cpu_s_per_1000"]:
        result["projected_rate_at_100pct_cpu"] = round(1000 / best["proxy_cpu_s_per_1000"])
    result["bars"] = [{"bar": f">= {BAR:,} validated shares/s in one process"
                       + ("" if p["instances"] == 1 else f" ({p['instances']} processes here)"),
                       "value": result["max_sustained_rate"],
                       "met": result["max_sustained_rate"] >= BAR}]
    if have_matplotlib() and steps:
        result["plot"] = plot(steps, ctx.out / "throughput.png")
    return result


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def _backlog_when_sent(gen: loadgen.LoadGen, phase: asyncio.Future, total: float) -> int:
    """Poll until the step's last share is written; return sent - answered at that moment."""
    while not phase.done():
        await asyncio.sleep(0.002)
        sent = gen.sent_in_phase
        if sent >= int(total):
            return sent - gen.answered
    return 0


def markdown(result: dict[str, Any]) -> str:
    rows = [[s["offered_rate"], s["send_rate"], s["validated_rate"], s["backlog_at_end"],
             s["pool_received"], s["proxy_cpu_util"], s["proxy_cpu_s_per_1000"],
             s["pool_cpu_util"], s["loadgen_cpu_util"], "yes" if s["sustained"] else "no"]
            for s in result["steps"]]
    return "\n".join([
        "## throughput",
        "",
        f"{result['params']['rigs']} rig connections, {result['params']['step_s']:g} s per step, "
        f"{result['params'].get('instances', 1)} proxy process(es) (proxy CPU is their sum), "
        f"pool: {result['params']['pool']}.",
        "",
        md_table(["offered/s", "sent/s", "validated/s", "backlog at end", "pool got",
                  "proxy CPU", "proxy CPU s / 1k shares", "pool CPU", "loadgen CPU", "sustained"],
                 rows),
        "",
        f"**max sustained: {result['max_sustained_rate']:,.0f} validated shares/s**, "
        f"proxy CPU {result['cpu_s_per_1000_shares']} s per 1,000 shares"
        + (f" (projection at 100% of a core: {result['projected_rate_at_100pct_cpu']:,}/s)"
           if result.get("projected_rate_at_100pct_cpu") else "")
        + (f"; stopped: {result['limit_reason']}" if result["limit_reason"] else ""),
    ]) + "\n"


def plot(steps: list[dict[str, Any]], path: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    offered = [s["offered_rate"] for s in steps]
    ax.plot(offered, offered, "--", color="grey", label="offered")
    ax.plot(offered, [s["validated_rate"] for s in steps], "o-", label="validated by the proxy")
    ax2 = ax.twinx()
    ax2.plot(offered, [s["proxy_cpu_util"] * 100 for s in steps], "s:", color="tab:red",
             label="proxy CPU %")
    ax.set_xlabel("offered shares/s")
    ax.set_ylabel("shares/s")
    ax2.set_ylabel("proxy CPU %")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.name)
