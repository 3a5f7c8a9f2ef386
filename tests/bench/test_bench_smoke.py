"""The benchmark harness in --smoke mode, so it cannot rot.

One run of ``python -m benchmarks --smoke`` (all five scenarios, a few seconds each) in a
subprocess; the tests check the JSON each scenario wrote: the keys are there, the values
are sane and the counts add up. They never assert a speed: bars are for people, not CI.
What they do assert is what any working proxy does at smoke load (500 shares/s from 20
rigs, 100 rigs failing over, 200 rigs at their own difficulties): every share answered,
accepted and forwarded, every rig kept and moved, every share accounted for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("latency", "throughput", "connections", "failover", "vardiff")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "cores" in proc.stdout and "uvloop" in proc.stdout  # the machine is printed first
    data = {}
    for name in SCENARIOS:
        path = out / f"{name}.json"
        assert path.exists(), f"{name}.json not written"
        assert (out / f"{name}.md").read_text().startswith(f"## {name}")
        data[name] = json.loads(path.read_text())
    return data


def _common(result: dict, name: str) -> None:
    assert result["scenario"] == name
    assert result["smoke"] is True
    assert result["machine"]["cores"] >= 1 and result["machine"]["python"]
    assert isinstance(result["machine"]["uvloop"], bool)
    for bar in result["bars"]:
        assert set(bar) >= {"bar", "value", "met"} or set(bar) >= {"bar", "value_ms", "met"}


def _nonneg(stats: dict) -> None:
    assert stats["count"] > 0
    for q in ("p50", "p90", "p99", "max"):
        assert stats[q] is not None and stats[q] >= 0
    assert stats["p50"] <= stats["p99"] <= stats["max"]


def test_latency(results):
    r = results["latency"]
    _common(r, "latency")
    modes = {run["mode"] for run in r["runs"]}
    assert {"direct", "proxy"} <= modes
    assert ("haproxy" in modes) == r["haproxy"].startswith("ok")
    for run in r["runs"]:
        assert run["sent"] > 0
        assert run["answered"] == run["sent"] == run["accepted"]
        assert run["pool_received"] == run["sent"]
        _nonneg(run["rig_ms"])
        _nonneg(run["pool_ms"])
    sides = {(c["rate"], c["side"]) for c in r["comparison"]}
    assert {(rate, side) for rate in r["params"]["rates"] for side in ("rig", "pool")} == sides
    for c in r["comparison"]:
        assert c["proxy_vs_direct_p99"] is not None and c["proxy_vs_direct_p99"] > 0


def test_throughput(results):
    r = results["throughput"]
    _common(r, "throughput")
    steps, p = r["steps"], r["params"]
    # the ramp runs in order and stops at the first step not sustained
    assert [s["offered_rate"] for s in steps] == p["ramp"][:len(steps)]
    assert all(s["sustained"] for s in steps[:-1])
    assert r["ramp_exhausted"] == (len(steps) == len(p["ramp"]) and steps[-1]["sustained"])
    # the first step is 500 shares/s from 20 rigs, a few percent of one core: a working proxy
    # answers, accepts and forwards every one of its shares in time
    assert steps[0]["sustained"], steps[0]
    for step in steps:
        # the load generator's shares are all valid: each one is answered true, whatever the pace
        assert step["sent"] > 0 and step["answered"] == step["accepted"] == step["sent"], step
        assert step["proxy_cpu_s"] > 0, step  # the proxy process measured is the one working
        if step["sustained"]:
            assert step["pool_received"] == step["sent"], step
            assert step["backlog_at_end"] <= max(50, p["backlog_limit_s"] * step["offered_rate"])
            assert step["validated_rate"] >= 0.95 * step["offered_rate"], step
    sustained = [s for s in steps if s["sustained"]]
    best = max(sustained, key=lambda s: s["validated_rate"])
    assert r["max_sustained_rate"] == best["validated_rate"] > 0
    assert r["max_sustained_offered"] == best["offered_rate"]
    assert r["cpu_s_per_1000_shares"] == best["proxy_cpu_s_per_1000"] > 0


def test_connections(results):
    r = results["connections"]
    _common(r, "connections")
    assert r["rigs"] == r["params"]["rigs"] > 0
    assert r["proxy_rss_kib_with_rigs"] > 0 and r["proxy_rss_kib_before"] > 0
    assert r["fanouts"] and len(r["fanouts"]) == r["params"]["broadcasts"]
    assert r["setup_rigs_disconnected"] == 0  # the proxy keeps idle subscribed rigs
    for f in r["fanouts"]:
        assert f["rigs_received"] + f["rigs_missing"] == r["rigs"]
        assert f["rigs_missing"] == 0
        # stamps are taken after the pool's write: the job reaches the first rig a hop later
        assert 0 < f["first_ms"] <= f["p50_ms"] <= f["last_ms"]
    lasts = sorted(f["last_ms"] for f in r["fanouts"])
    assert r["fanout_last_ms_median"] == lasts[len(lasts) // 2]
    assert r["fanout_last_ms_max"] == lasts[-1]
    # the bare send-loop baseline: as many sockets, one round per broadcast, same line size
    assert r["params"]["loadgen_processes"] >= 1 and r["params"]["bare_senders"] >= 1
    assert r["notify_bytes"] > 0
    assert len(r["bare_fanouts"]) == len(r["fanouts"])
    for b in r["bare_fanouts"]:
        assert b["rigs_received"] == r["rigs"] and b["rigs_missing"] == 0
        assert 0 < b["first_ms"] <= b["p50_ms"] <= b["last_ms"]
    ratios = sorted(round(f["last_ms"] / b["last_ms"], 3)
                    for f, b in zip(r["fanouts"], r["bare_fanouts"]))
    assert r["fanout_ratios"] == ratios
    assert r["fanout_ratio_median"] == ratios[len(ratios) // 2]


def test_failover(results):
    r = results["failover"]
    _common(r, "failover")
    cap = r["params"]["per_rig_max_rigs"]
    per_rig = [min(n, cap) for n in r["params"]["sizes"]]
    assert [ph["label"] for ph in r["phases"]] == (["reset", "stall", "stall-auto"]
                                                   + [f"per-rig {n:,}" for n in per_rig])
    assert [ph["rigs"] for ph in r["phases"]] == [r["params"]["rigs"]] * 3 + per_rig
    # a silent pool: the fixed window (1 s in smoke) and auto each moved every rig
    auto = next(ph for ph in r["phases"] if ph["label"] == "stall-auto")
    assert auto["silent_timeout_s"] == "auto" and auto["rigs_moved"] == auto["rigs"]
    assert any(b["bar"].startswith("silent pool: shares lost with auto") for b in r["bars"])
    for ph in r["phases"]:
        assert ph["rigs"] == ph["rigs_connected"]
        # the failover is invisible to the rigs: every one moved to the backup's job, none
        # disconnected, every submit answered
        assert ph["rigs_moved"] == ph["rigs"] and ph["rigs_not_moved"] == 0, ph["fault"]
        assert ph["disconnects"] == 0 and ph["unanswered_submits"] == 0, ph["fault"]
        assert ph["proxy_counters"]["rigs_disconnected"] == 0
        assert ph["rigs_asked"] >= ph["rigs"]
        assert ph["submitted"] >= ph["accepted_by_proxy"] > 0
        assert 0 <= ph["first_on_backup_ms"] <= ph["median_on_backup_ms"] <= ph["all_on_backup_ms"]
        # every share the proxy accepted from a rig is accounted for exactly once
        acc = ph["accounting"]
        assert acc["available"] is True  # the API is enabled in this scenario
        assert acc["rig_accepted"] == ph["accepted_by_proxy"]
        assert acc["unaccounted_total"] == 0, acc
        assert all(pool["unaccounted"] == 0 for pool in acc["per_pool"].values()), acc
        assert acc["lost_shares"] == sum(pool["timeouts"] + pool["lost_in_flight"] + pool["undeliverable"]
                                         for pool in acc["per_pool"].values())
        # the pools agree: nothing invalid reached them, and the untouched backup's verdicts
        # all reached the proxy
        sims = ph["sim_pools"]
        assert set(sims) == {"primary", "backup"}
        assert sims["primary"]["invalid"] == sims["backup"]["invalid"] == 0
        backup = acc["per_pool"]["backup"]
        assert backup["accepted"] == backup["forwarded"] == sims["backup"]["accepted"] > 0, (backup, sims)
        if ph["fault"] == "stall":  # silence is only seen as shares left without a verdict
            primary = acc["per_pool"]["primary"]
            assert primary["timeouts"] + primary["lost_in_flight"] >= 1, acc
        # the proxy ran under the loop watchdog, in every phase
        for window in (ph["loop_stall"], ph["loop_stall_before_fault"]):
            assert window["watched"] is True
            assert window["stall_ms"] >= 0 and window["stalls_over_10ms"] >= window["stalls_over_100ms"] >= 0
        assert ph["loop_stall_ms"] == ph["loop_stall"]["stall_ms"]


def test_failover_one_connection_per_rig(results):
    """The per-rig phase really gives every rig its own pool connection and moves them all;
    the core-only phase moves every rig of its size."""
    r = results["failover"]
    assert r["params"]["nofile_limit"] > 2 * r["params"]["per_rig_max_rigs"]
    per_rig = [ph for ph in r["phases"] if ph["label"].startswith("per-rig")]
    assert per_rig and all(ph["extranonce_prefix_size"] == 0 for ph in per_rig)
    for ph in per_rig:
        assert ph["rigs_moved"] == ph["rigs"]  # every rig got the backup's job
        # one upstream connection per rig on the backup (a folding proxy would hold one)
        assert ph["sim_pools"]["backup"]["connections"] >= ph["rigs"]
        assert ph["sim_pools"]["primary"]["connections"] == 0  # reset, then refused
    fold = [ph for ph in r["phases"] if ph["extranonce_prefix_size"]]
    assert all(ph["sim_pools"]["backup"]["connections"] < ph["rigs"] for ph in fold)
    assert [c["rigs"] for c in r["core_only"]] == r["params"]["sizes"]
    for c in r["core_only"]:
        n = c["rigs"]
        assert c["rigs_on_primary_before"] == c["primary_connections"] == c["rigs_on_backup"] == n
        assert c["backup_connections"] >= n - 1  # one rig took the backup's warm connection
        assert c["rigs_closed"] == 0
        assert 0 < c["fail_ms"] <= c["core_ms"]
        assert c["backup_call_max_ms"] <= c["backup_calls_ms"]
    stall_bars = [b for b in r["bars"] if "event-loop stall" in b["bar"]]
    assert len(stall_bars) == len(per_rig)


def test_failover_glue_dial_burst(results):
    """The glue phase dialed every connection of its size, under the loop watchdog."""
    r = results["failover"]
    assert [g["dials"] for g in r["glue_only"]] == r["params"]["sizes"]
    for g in r["glue_only"]:
        assert g["connected"] == g["dials"] and g["failed"] == 0
        assert g["all_up_ms"] > 0 and g["longest_pass_ms"] >= 0 and g["passes_over_10ms"] >= 0
        assert g["cpu_us_per_dial"] >= 0


def test_vardiff(results):
    """200 rigs at 2-8 H/s, each at its own difficulty, under a pool whose vardiff raises the
    one connection they share: the proxy must keep every rig below the pool, move them off
    the pool's first difficulty, forward only what the pool asked for, and lose nothing."""
    r = results["vardiff"]
    _common(r, "vardiff")
    p, w, d, h, hl = r["params"], r["window"], r["difficulty"], r["hashrate"], r["health"]
    assert r["rigs"] == p["rigs"] == h["rigs"] == d["rigs_with_difficulty"] > 0
    # the default layout on a pool of extranonce2_size 8: 2-byte prefix + 4 for every rig
    assert r["layout"]["rigs"] == {"2+4": r["rigs"]}
    assert (r["layout"]["proxy"]["prefix_size"], r["layout"]["proxy"]["extranonce2_size"]) == (2, 4)
    # the pool raised the connection's difficulty; every rig is below it, on its own
    pool = d["pool_connection"]
    assert d["pool_connections"] == 1 and d["sim_pool_connections"] == [pool]
    assert pool > p["pool_start_difficulty"] and d["sim_pool_retargets"] >= 1
    assert d["rigs_above_pool"] == 0 and d["rig_max"] < pool and d["pool_over_rig_max"] > 1
    # ... moved up from where they started (the pool's first difficulty) by their own shares
    assert d["rig_median"] > p["pool_start_difficulty"] and d["set_difficulty_per_rig"] > 1
    assert sum(r["targeting"]["first_difficulty"].values()) == r["rigs"]
    # the proxy validated the rigs' shares and forwarded only those the pool asked for
    assert w["validated_per_s"] > 0 and w["proxy_cpu_s"] > 0
    assert w["forwarded_per_s"] < w["validated_per_s"]  # ~1 share in the window: may be 0
    counters = hl["proxy_counters"]
    assert 0 < counters["forwarded"] < counters["accepted"]
    assert counters["submits"] == hl["loadgen_submitted"]
    assert counters["accepted"] == hl["loadgen_accepted"] > 0
    assert counters["accepted"] == (counters["forwarded"] + counters["below_pool_target"]
                                    + counters["outside_pool_mask"])
    assert counters["forwarded"] == hl["proxy_pool"]["accepted"] == hl["sim_pool"]["accepted"]
    assert hl["sim_pool"]["invalid"] == 0 and not hl["sim_pool"]["rejected"]
    # the farm is undisturbed: no disconnect, every submit answered, only stale rejects
    assert hl["disconnects"] == hl["unanswered"] == hl["rejected_not_stale"] == 0, hl
    assert counters["rigs_disconnected"] == 0 and hl["bad_lines"] == 0 and not hl["other_methods"]
    # each rig's hashrate is credited at the difficulty its shares met: a handful of shares
    # per rig is noisy (1/sqrt(n)), but crediting the pool's difficulty, or none, is not
    assert h["median_abs_error"] < 0.6, h
    assert 0.5 < h["mean_ratio"] < 1.5, h


def test_two_instances_sharing_the_rig_port(tmp_path):
    """--instances 2: two proxy processes on one port; every rig served, sums reported."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "connections", "throughput", "--smoke",
                           "--instances", "2", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    conn = json.loads((tmp_path / "connections-x2.json").read_text())
    assert conn["params"]["instances"] == 2
    assert all(f["rigs_missing"] == 0 and f["rigs_received"] == conn["rigs"] for f in conn["fanouts"])
    assert conn["proxy_rss_kib_with_rigs"] > conn["proxy_rss_kib_before"] > 0
    tput = json.loads((tmp_path / "throughput-x2.json").read_text())
    assert tput["params"]["instances"] == 2
    assert all(s["pool_received"] == s["sent"] for s in tput["steps"] if s["sustained"])
    assert tput["max_sustained_rate"] > 0
    assert not (tmp_path / "connections.json").exists()  # a 1-instance result is never overwritten


def test_sharepath_driver(tmp_path):
    """``python -m benchmarks.sharepath``: every share of every run answered true and
    forwarded (the driver raises otherwise), and the JSON says what it timed."""
    out = tmp_path / "sharepath.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.sharepath", "--rigs", "20",
                           "--shares", "400", "--runs", "2", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["rigs"] == 20 and len(data["runs"]) == 2
    for run in data["runs"]:
        assert run["shares"] == 400
        assert run["submit_us"] > 0 and run["answer_us"] > 0
        assert run["total_us"] == pytest.approx(run["submit_us"] + run["answer_us"], abs=0.02)
    assert data["total_us"]["min"] <= data["total_us"]["median"] <= data["total_us"]["max"]
