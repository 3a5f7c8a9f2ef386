"""``stratum-proxy demo``: the whole story on loopback.

Two simulated pools, a fleet of simulated rigs, the proxy and its API/dashboard; part-way
the primary pool dies (TCP reset, then refuses connections), later it comes back and the
farm fails back after the hold-down.  With ``--duration`` of 40 s or more a second act
follows: a third of the rigs die, the backfill controller rents hashpower on the simulated
marketplace (its rigs dial the proxy), delivered hashrate recovers to the target, the rigs
return and the order is cancelled.  A status line each second shows what an operator
would watch; the summary at the end says whether any rig noticed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from typing import Any

from .config import load_dict
from .net.service import ProxyService
from .rental.units import format_hashrate
from .sim.market import SimMarket, SimMarketConfig
from .sim.pool import SimPool, SimPoolConfig
from .sim.rigs import RigFleet

DEMO_TOKEN = "demo-token"
RENTAL_ACT_MIN_DURATION = 60.0
ACT_RIGS_DOWN_MAX_S = 30.0
ACT_EXTRA_MAX_S = 60.0
SETTLE_S = 6.0  # the delivered-hashrate window (5 s) plus a second, after each change
PRIMARY_DIFFICULTY = 2**-22
RIG_SHARE_INTERVAL = 1.0
# every demo rig hashes at one pace: a share a second at the primary's difficulty, fewer and
# bigger ones at the backup's, so the farm's hashrate holds across the failover
RIG_HASHRATE = PRIMARY_DIFFICULTY * 2**32 / RIG_SHARE_INTERVAL
# the simulated market sells H/s; this price per H/s per day reads as 2000 BTC/PH/day
SIM_MARKET_PRICE = Decimal("0.000000000002")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def demo_config(primary_port: int, backup_port: int, rig_port: int, api_port: int,
                hold: float) -> dict[str, Any]:
    return {
        "proxy": {"listen": f"127.0.0.1:{rig_port}", "instance": "demo", "failback_hold_s": hold,
                  "silent_timeout_s": 2.0},
        "api": {"listen": f"127.0.0.1:{api_port}", "token": DEMO_TOKEN},
        "pools": [
            {"name": "primary", "url": f"stratum+tcp://127.0.0.1:{primary_port}",
             "user": "demo.farm", "priority": 0},
            {"name": "backup", "url": f"stratum+tcp://127.0.0.1:{backup_port}",
             "user": "demo.farm", "priority": 1},
        ],
    }


def rental_config(market_url: str, rigs: int, ledger: str) -> dict[str, Any]:
    """[rental] for the demo: the whole farm's hashrate is the target; rented rigs dial the proxy."""
    target = rigs * PRIMARY_DIFFICULTY * 2**32 / RIG_SHARE_INTERVAL
    return {"provider": "sim", "api_url": market_url, "key_env": "DEMO_MARKET_KEY",
            "secret_env": "DEMO_MARKET_SECRET", "org_env": "DEMO_MARKET_ORG",
            "target_hashrate": f"{target:.0f} H/s", "trigger_deficit": 0.15, "trigger_after_s": 3.0,
            "recover_after_s": 3.0, "min_order_s": 0, "max_price": "3000", "daily_budget_btc": "0.01",
            "window_s": 5.0, "interval_s": 0.5, "pool": "@proxy", "public_address": "127.0.0.1:0",
            "ledger": ledger}


def _rental_line(service: ProxyService) -> str:
    ctl = service.rental
    if ctl is None:
        return ""
    view = ctl.view()
    return (f" | rental {view['state']}: delivered {format_hashrate(view['delivered_hs'])} of "
            f"{format_hashrate(view['target_hs'])}, ordered {format_hashrate(view['ordered_hs'])}, "
            f"rented {format_hashrate(view['rented_hs'])}")


def _act_running(service: ProxyService, rental_act: bool, rigs_dead: bool, rigs_back: bool,
                 overtime: float, since_back: float) -> bool:
    """Past --duration, keep going while the rig-failure act has not finished (bounded)."""
    if not rental_act or overtime >= ACT_EXTRA_MAX_S:
        return False
    if not rigs_dead:
        return overtime < 20.0  # still waiting for the failback to settle
    ctl = service.rental
    return not rigs_back or (ctl is not None and ctl.order is not None and since_back < 30.0)


async def _start_service(cfg: dict[str, Any]) -> ProxyService:
    service = ProxyService(load_dict(cfg))
    try:
        await service.start()
    except OSError:
        await service.stop()
        # the API port is taken (another demo?): take any free one rather than fail
        cfg["api"]["listen"] = "127.0.0.1:0"
        service = ProxyService(load_dict(cfg))
        await service.start()
    return service


def _status_line(t: float, service: ProxyService, fleet: RigFleet, expected: int | None = None) -> str:
    assert service.view is not None
    now = service.now()
    status = service.view.status(now)
    pools = []
    for view in service.view.pools(now):
        mark = "*" if view["active"] else " "
        pools.append(f"{mark}{view['name']}({view['state']}, acc {view['accepted']}, "
                     f"rej {view['rejected_total']}, lost {view['lost_total']})")
    p50 = fleet.latency_quantile(0.5)
    p99 = fleet.latency_quantile(0.99)
    lat = f"{p50 * 1000:.2f}/{p99 * 1000:.2f} ms" if p50 is not None and p99 is not None else "-"
    return (f"t={t:5.1f}s rigs {status['rigs_connected']}/{expected or fleet.count} "
            f"active={','.join(status['active_pools']) or 'NONE'} | {' '.join(pools)} | "
            f"rig submits {fleet.submitted} answered {fleet.submitted - fleet.pending} "
            f"p50/p99 {lat} | disconnects {fleet.disconnects}" + _rental_line(service))


async def run_demo(args: argparse.Namespace) -> int:
    duration = max(float(args.duration), 10.0)
    rental_act = duration >= RENTAL_ACT_MIN_DURATION
    primary = SimPool(SimPoolConfig(name="primary", difficulty=PRIMARY_DIFFICULTY, job_interval=10.0))
    backup = SimPool(SimPoolConfig(name="backup", difficulty=2**-21, job_interval=10.0))
    await primary.start()
    await backup.start()
    market: SimMarket | None = None
    ledger_dir: str | None = None
    cfg = demo_config(primary.port, backup.port, args.port, args.api_port, args.hold)
    if rental_act:
        market = SimMarket(SimMarketConfig(
            market_price=SIM_MARKET_PRICE, activation_delay_s=1.0, rig_difficulty=PRIMARY_DIFFICULTY,
            rig_share_interval=RIG_SHARE_INTERVAL, min_amount=Decimal("0.0001"), min_limit=Decimal("100"),
            time_scale=3600.0))
        await market.start()
        ledger_dir = tempfile.mkdtemp(prefix="stratum-proxy-demo-")
        cfg["rental"] = rental_config(market.url, args.rigs, f"{ledger_dir}/rental-ledger.sqlite3")
    service = await _start_service(cfg)
    assert service.view is not None
    # with the rental act a third of the rigs are a separate fleet that dies and comes back
    doomed_count = args.rigs // 3 if rental_act else 0
    fleet = RigFleet("127.0.0.1", service.port, args.rigs - doomed_count, share_interval=RIG_SHARE_INTERVAL,
                     seed=7, hashrate=RIG_HASHRATE)
    doomed = (RigFleet("127.0.0.1", service.port, doomed_count, share_interval=RIG_SHARE_INTERVAL, seed=8,
                       worker_prefix="rigb", hashrate=RIG_HASHRATE) if doomed_count else None)
    returned: RigFleet | None = None
    expected = args.rigs
    seen_events = 0
    kill_at, revive_at = duration * 0.25, duration * 0.45
    # the second act waits for the first to end (the farm back on the primary, the measurement
    # settled); the rigs return once the rented hashpower has covered them for a while (or after
    # ACT_RIGS_DOWN_MAX_S); the demo runs past --duration until the order is cancelled (at most
    # ACT_EXTRA_MAX_S more), so the outage act keeps its timing
    rigs_died_at = rigs_back_at = 0.0
    on_primary_since: float | None = None
    covered_since: float | None = None
    killed = revived = rigs_dead = rigs_back = False
    t_kill = 0.0
    failover_ms: float | None = None
    try:
        _out(f"demo: pools on 127.0.0.1:{primary.port} (primary) and :{backup.port} (backup); "
             f"proxy for rigs on 127.0.0.1:{service.port}")
        if service.api_port:
            _out(f"demo: dashboard http://127.0.0.1:{service.api_port}/  (token {DEMO_TOKEN!r})")
        _out(f"demo: {args.rigs} rigs; primary dies at {kill_at:.0f}s, returns at {revive_at:.0f}s, "
             f"failback after a {args.hold:g}s hold-down; {duration:.0f}s in all")
        if rental_act:
            _out(f"demo: rig-failure act: after the failback {doomed_count} rigs die; the backfill "
                 f"controller rents on the simulated marketplace {market.url if market else ''} "
                 f"(GET /api/v1/rentals); the rigs return when it covers them; the demo runs on "
                 f"until the order is cancelled")
        else:
            _out(f"demo: (the rig-failure / rented-hashpower act needs --duration >= "
                 f"{RENTAL_ACT_MIN_DURATION:g})")
        await fleet.start()
        if doomed is not None:
            await doomed.start()
        start = time.monotonic()
        while (t := time.monotonic() - start) < duration or _act_running(
                service, rental_act, rigs_dead, rigs_back, t - duration, t - rigs_back_at):
            if not killed and t >= kill_at:
                killed = True
                t_kill = time.monotonic()
                _out("demo: >>> killing the primary pool (TCP reset, then connection refused)")
                primary.reset_all()
                await primary.refuse()
            if killed and failover_ms is None and fleet.rigs_with_job_containing(b"backup") == fleet.count:
                times = [x for x in fleet.first_notify_after(t_kill, b"backup") if x is not None]
                if len(times) == fleet.count:
                    failover_ms = (max(times) - t_kill) * 1000
                    _out(f"demo: every rig had the backup's job {failover_ms:.1f} ms after the reset")
            if not revived and t >= revive_at:
                revived = True
                _out("demo: >>> the primary pool is back")
                await primary.resume()
            on_primary = service.view.active_pools() == ["primary"] and revived
            on_primary_since = (on_primary_since or t) if on_primary else None
            if (doomed is not None and not rigs_dead and on_primary_since is not None
                    and t - on_primary_since >= SETTLE_S):
                rigs_dead = True
                rigs_died_at = t
                _out(f"demo: >>> {doomed.count} rigs die (power failure)")
                await doomed.stop()
                expected -= doomed.count
            ctl = service.rental
            covered = (rigs_dead and ctl is not None and ctl.order is not None and ctl.order.delivered_hs > 0
                       and (ctl.delivered_hs or 0) >= 0.85 * ctl.config.target_hs)
            covered_since = (covered_since or t) if covered else None
            if doomed is not None and rigs_dead and not rigs_back and (
                    t - rigs_died_at >= ACT_RIGS_DOWN_MAX_S
                    or (covered_since is not None and t - covered_since >= SETTLE_S)):
                rigs_back = True
                rigs_back_at = t
                _out(f"demo: >>> the {doomed.count} rigs are back")
                returned = RigFleet("127.0.0.1", service.port, doomed.count,
                                    share_interval=RIG_SHARE_INTERVAL,
                                    seed=9, worker_prefix="rigc", hashrate=RIG_HASHRATE)
                await returned.start()
                expected += doomed.count
            events = service.events.recent(1000)
            for event in events[seen_events:] if len(events) >= seen_events else events:
                if event["kind"] in ("pool_switch", "pool_health", "pool_up") or (
                        event["kind"].startswith("rental_") and event["kind"] != "rental_decision"):
                    _out(f"event: {event['kind']} " + " ".join(
                        f"{k}={v}" for k, v in event.items() if k not in ("seq", "time", "kind")))
            seen_events = len(events)
            _out(_status_line(t, service, fleet, expected))
            await asyncio.sleep(1.0)
        for event in service.events.recent(1000)[seen_events:]:
            if event["kind"].startswith("rental_order"):
                _out(f"event: {event['kind']} " + " ".join(
                    f"{k}={v}" for k, v in event.items() if k not in ("seq", "time", "kind")))
        await fleet.drain(10)
        if returned is not None:
            await returned.drain(10)
        _out(_status_line(time.monotonic() - start, service, fleet, expected))
        switches = [e for e in service.events.recent(1000) if e["kind"] == "pool_switch"]
        _out("demo summary: switches " + " ; ".join(
            f"{','.join(e['from_pools']) or '-'} -> {','.join(e['to_pools']) or '-'} ({e['reason']})"
            for e in switches))
        failover = f"{failover_ms:.1f} ms" if failover_ms is not None else "n/a"
        invalid = sum(1 for s in [*primary.shares, *backup.shares] if not s.valid)
        living = [f for f in (fleet, returned) if f is not None]
        disconnects = sum(f.disconnects for f in (fleet, doomed, returned) if f is not None)
        pending = sum(f.pending for f in living)
        _out(f"demo summary: rigs {args.rigs}, disconnects {disconnects}, "
             f"submits {sum(f.submitted for f in living)}, unanswered {pending}, "
             f"rejected {sum(sum(f.rejected.values()) for f in living)}, failover {failover}, "
             f"invalid shares at pools {invalid}")
        if rental_act and service.rental is not None:
            rental_events = service.events.recent(1000)
            placed = sum(1 for e in rental_events if e["kind"] == "rental_order_placed")
            cancelled = sum(1 for e in rental_events if e["kind"] == "rental_order_cancelled")
            view = service.rental.view()
            _out(f"demo summary: rental orders placed {placed}, cancelled {cancelled}, "
                 f"open {1 if view['active_order'] else 0}, spent today "
                 f"{Decimal(view['spent_today_btc'] or 0):f} BTC (simulated market, an hour per second), "
                 f"budget left {Decimal(view['budget_left_btc'] or 0):f} BTC")
        return 0 if disconnects == 0 and pending == 0 else 1
    finally:
        for f in (fleet, doomed, returned):
            if f is not None:
                with contextlib.suppress(Exception):
                    await f.stop()
        await service.stop()
        if market is not None:
            await market.stop()
        await primary.stop()
        await backup.stop()
        if ledger_dir is not None:
            shutil.rmtree(ledger_dir, ignore_errors=True)
