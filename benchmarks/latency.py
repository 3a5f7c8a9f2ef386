"""Scenario 1, latency: submit latency at the rig and share latency at the pool.

Same load, same pool, same run: rigs -> pool directly (the limit), rigs -> proxy -> pool,
rigs -> HAProxy (TCP mode, one thread) -> pool. Reported as p50/p99/max, added latency over
direct, and ratios. The proxy answers a locally valid share at once, so the rig side
measures the proxy's validation path, and the pool side (pool receive - rig send) the
forwarding path.
"""

from __future__ import annotations

from typing import Any

from . import loadgen
from .common import (
    HarnessError,
    cpu_seconds,
    free_port,
    haproxy_exe,
    have_matplotlib,
    md_table,
    proxy_config,
    ratio_or_none,
    sub_or_none,
    summarize_ns,
)
from .poolproc import fast_pool_main

USE_UVLOOP = True
DIFFICULTY = 2.0 ** -32  # target ~ 2^256 * (1 - 2^-16): almost every hash is a share
POOL_E2_SIZE = 8
ADDED_P99_BAR_MS = 1.0
HAPROXY_FACTOR_BAR = 3.0
BAR_RATE = 5000


def params(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    if ctx.smoke:
        rates, duration, warmup, rigs = [200], 2.0, 0.3, 20
    else:
        rates, duration, warmup, rigs = [1000, 5000], 10.0, 1.0, 200
    if a.rate:
        rates = [a.rate]
    return {"rates": rates, "duration_s": a.duration or duration, "warmup_s": warmup,
            "rigs": a.rigs or rigs, "pool": "fast answering pool (benchmarks/poolproc.py)",
            "pool_difficulty": DIFFICULTY, "pool_extranonce2_size": POOL_E2_SIZE}


async def run(ctx: Any) -> dict[str, Any]:
    p = params(ctx)
    procs = ctx.procs
    pool, info = await procs.start_child(fast_pool_main, DIFFICULTY, POOL_E2_SIZE)
    pool_port = info["port"]
    proxy, proxy_port, _ = await procs.start_proxy(proxy_config(
        [{"name": "fast", "url": f"stratum+tcp://127.0.0.1:{pool_port}", "user": "bench"}],
        keepalive_s=3600.0))
    targets: list[tuple[str, int]] = [("direct", pool_port), ("proxy", proxy_port)]
    haproxy_status = "skipped: haproxy is not installed (apt-get install haproxy)"
    if haproxy_exe() is not None:
        hp_port = free_port()
        try:
            await procs.start_haproxy(hp_port, pool_port)
        except HarnessError as exc:
            haproxy_status = f"skipped: haproxy did not start: {exc}"
        else:
            targets.append(("haproxy", hp_port))
            haproxy_status = "ok (tcp mode, nbthread 1)"
    ctx.log(f"latency: {p['rigs']} rigs, rates {p['rates']}/s, {p['duration_s']:g} s each "
            f"(+{p['warmup_s']:g} s warm-up), modes {[t[0] for t in targets]}")
    runs: list[dict[str, Any]] = []
    samples: dict[tuple[str, int], list[int]] = {}
    for mode, port in targets:
        gen = loadgen.LoadGen("127.0.0.1", port, p["rigs"])
        try:
            await gen.connect()
            for rate in p["rates"]:
                await pool.call("reset", record=True)
                cpu0 = cpu_seconds(proxy.pid) if mode == "proxy" else None
                res = await gen.run_phase(rate, p["duration_s"] + p["warmup_s"], record=True)
                cpu1 = cpu_seconds(proxy.pid) if mode == "proxy" else None
                dump = await pool.call("dump")
                first = min((t for t in res.send_t if t), default=0)
                skip = first + int(p["warmup_s"] * 1e9)
                rig_lat = loadgen.latencies(res, skip)
                pool_lat = loadgen.pool_latencies(res, dump["nonces"], dump["times"], skip)
                samples[(mode, rate)] = rig_lat
                entry = {
                    "mode": mode, "rate": rate, "sent": res.sent, "answered": res.answered,
                    "accepted": res.accepted, "pool_received": len(dump["nonces"]),
                    "achieved_rate": round(res.sent / res.send_elapsed, 1) if res.send_elapsed else 0,
                    "rig_ms": summarize_ns(rig_lat), "pool_ms": summarize_ns(pool_lat),
                    "proxy_cpu_s": round(cpu1 - cpu0, 3) if cpu0 is not None and cpu1 is not None
                    else None,
                }
                runs.append(entry)
                ctx.log(f"  {mode:8s} {rate:>6}/s  rig p50 {entry['rig_ms']['p50']} p99 "
                        f"{entry['rig_ms']['p99']} max {entry['rig_ms']['max']} ms | pool p50 "
                        f"{entry['pool_ms']['p50']} p99 {entry['pool_ms']['p99']} max "
                        f"{entry['pool_ms']['max']} ms | answered {res.answered}/{res.sent}")
        finally:
            gen.close()
        if gen.disconnects:
            raise HarnessError(f"latency: {gen.disconnects} load-generator connections dropped "
                               f"in mode {mode}")
    comparison = compare(runs, p["rates"])
    result = {"scenario": "latency", "params": p, "haproxy": haproxy_status, "runs": runs,
              "comparison": comparison, "bars": bars(comparison)}
    if have_matplotlib():
        result["plot"] = plot_cdf(samples, ctx.out / "latency_cdf.png")
    return result


def compare(runs: list[dict[str, Any]], rates: list[int]) -> list[dict[str, Any]]:
    by = {(r["mode"], r["rate"]): r for r in runs}
    out = []
    for rate in rates:
        for side in ("rig_ms", "pool_ms"):
            direct = by.get(("direct", rate), {}).get(side, {})
            prox = by.get(("proxy", rate), {}).get(side, {})
            hap = by.get(("haproxy", rate), {}).get(side, {})
            row: dict[str, Any] = {"rate": rate, "side": side.split("_")[0]}
            for q in ("p50", "p99", "max"):
                row[f"direct_{q}"] = direct.get(q)
                row[f"proxy_{q}"] = prox.get(q)
                row[f"haproxy_{q}"] = hap.get(q)
                row[f"proxy_added_{q}"] = sub_or_none(prox.get(q), direct.get(q))
                row[f"haproxy_added_{q}"] = sub_or_none(hap.get(q), direct.get(q))
            row["proxy_vs_direct_p99"] = ratio_or_none(prox.get("p99"), direct.get("p99"))
            row["haproxy_vs_direct_p99"] = ratio_or_none(hap.get("p99"), direct.get("p99"))
            # added latency relative to HAProxy's added latency (a floor of 1 us avoids /0)
            pa, ha = row["proxy_added_p99"], row["haproxy_added_p99"]
            row["proxy_added_vs_haproxy_added_p99"] = (
                None if pa is None or ha is None else round(max(pa, 0.0) / max(ha, 0.001), 2))
            out.append(row)
    return out


def bars(comparison: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in comparison:
        if row["rate"] != BAR_RATE:
            continue
        added = row["proxy_added_p99"]
        out.append({"bar": f"added p99 latency ({row['side']} side) < {ADDED_P99_BAR_MS:g} ms at "
                           f"{BAR_RATE} shares/s", "value_ms": added,
                    "met": None if added is None else added < ADDED_P99_BAR_MS})
        factor = row["proxy_added_vs_haproxy_added_p99"]
        out.append({"bar": f"added p99 ({row['side']} side) within {HAPROXY_FACTOR_BAR:g}x "
                           "HAProxy's added p99", "value": factor,
                    "met": None if factor is None else factor <= HAPROXY_FACTOR_BAR})
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["runs"]:
        rows.append([r["mode"], r["rate"], r["achieved_rate"], r["answered"], r["pool_received"],
                     r["rig_ms"]["p50"], r["rig_ms"]["p99"], r["rig_ms"]["max"],
                     r["pool_ms"]["p50"], r["pool_ms"]["p99"], r["pool_ms"]["max"]])
    parts = [
        "## latency",
        "",
        f"{result['params']['rigs']} rig connections, pool: {result['params']['pool']}; "
        f"HAProxy: {result['haproxy']}. Times in ms. *rig* = submit -> answer at the rig; "
        "*pool* = rig send -> pool receive.",
        "",
        md_table(["mode", "offered/s", "sent/s", "answered", "pool got", "rig p50", "rig p99",
                  "rig max", "pool p50", "pool p99", "pool max"], rows),
        "",
        md_table(["rate", "side", "proxy added p50", "proxy added p99", "haproxy added p99",
                  "proxy/direct p99", "haproxy/direct p99", "proxy added / haproxy added p99"],
                 [[c["rate"], c["side"], c["proxy_added_p50"], c["proxy_added_p99"],
                   c["haproxy_added_p99"], c["proxy_vs_direct_p99"], c["haproxy_vs_direct_p99"],
                   c["proxy_added_vs_haproxy_added_p99"]] for c in result["comparison"]]),
    ]
    if result["bars"]:
        parts += ["", md_table(["bar", "value", "met"],
                               [[b["bar"], b.get("value_ms", b.get("value")), b["met"]]
                                for b in result["bars"]])]
    return "\n".join(parts) + "\n"


def plot_cdf(samples: dict[tuple[str, int], list[int]], path: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (mode, rate), values in sorted(samples.items()):
        if not values:
            continue
        data = sorted(v / 1e6 for v in values)
        n = len(data)
        ax.plot(data, [(i + 1) / n for i in range(n)], label=f"{mode} @ {rate}/s")
    ax.set_xscale("log")
    ax.set_xlabel("submit -> answer at the rig (ms, log)")
    ax.set_ylabel("fraction of shares")
    ax.set_title("share latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.name)
