"""``stratum-proxy demo``: the whole story on loopback.

Two simulated pools (the primary retargets its difficulty per connection, like a real
pool's vardiff; the proxy gives each rig its own), a fleet of simulated rigs, the proxy and
its API/dashboard; part-way the primary pool dies (TCP reset, then refuses connections),
later it comes back and the farm fails back after the hold-down.  With ``--duration`` of
40 s or more a second act follows: a third of the rigs die, the backfill controller rents
hashpower on the simulated marketplace (its rigs dial the proxy), delivered hashrate
recovers to the target, the rigs return and the order is cancelled.  A status line each
second shows what an operator would watch; the summary at the end says whether any rig
noticed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from typing import Any

from .config import load_dict
from .demo_power import PowerAct, power_config
from .net.service import ProxyService
from .rental.units import format_btc, format_hashrate, format_price, price_decimals
from .sim._wait import wait_until
from .sim.market import SimMarket, SimMarketConfig
from .sim.nut import SimNut
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


# ------------------------------------------------------------------ the terminal

def setup_logging(log_file: str | None, verbose: bool) -> str:
    """The full log goes to a file; the terminal keeps the story unless ``verbose``.

    Returns the file's path. The records keep the format ``main()`` gave the terminal."""
    path = log_file or os.path.join(
        tempfile.gettempdir(), f"stratum-proxy-demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    root = logging.getLogger()
    terminal = [h for h in root.handlers if type(h) is logging.StreamHandler
                and getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(terminal[0].formatter if terminal and terminal[0].formatter else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if not verbose:
        for h in terminal:
            root.removeHandler(h)
    return path


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _short_id(order_id: object) -> str:
    return str(order_id)[:8]


# the events that tell the story (the rest stay in the log file)
STORY_EVENTS = ("pool_health", "pool_switch", "pool_narrow", "pool_reconnect_requested",
                "rigs_extranonce_changed", "extranonce_layout", "rigs_stalled", "rigs_resumed")


def describe_event(e: dict[str, Any], price_decimals: int | None = None) -> str | None:
    """One line in words for an event of the story, None for one that is not part of it."""
    kind = str(e.get("kind", ""))
    reason = str(e.get("reason") or "")
    if kind == "pool_switch":
        to = ", ".join(e.get("to_pools") or [])
        if not e.get("from_pools"):
            return f"mining on {to} ({reason})"
        if not to:
            return f"NO usable pool: {reason}; {e.get('note', '')}".rstrip("; ")
        moved = e.get("rigs_moved") or 0
        return (f"switch {', '.join(e['from_pools'])} -> {to}: {reason}"
                + (f" ({moved:,} rigs moved)" if moved else ""))
    if kind == "pool_health":
        return f"pool {e.get('pool')}: {e.get('previous')} -> {e.get('state')} ({reason})"
    if kind == "extranonce_layout":
        layout = f"{e.get('prefix_size')}-byte prefix + {e.get('extranonce2_size')}"
        return f"extranonce layout: {layout} ({reason})"
    if kind in ("rigs_stalled", "rigs_resumed"):
        return (f"{e.get('count')} rig(s) {kind.split('_')[1]}: {', '.join(e.get('workers') or [])}"
                + (f" ({reason})" if reason else ""))
    if kind in STORY_EVENTS:
        return f"{kind.replace('_', ' ')}: {e.get('pool', '')} {reason}".rstrip()
    if kind in ("power_ups", "power_decision", "power_lead", "power_curtailment"):
        return f"power: {reason}"
    if not kind.startswith("rental_"):
        return None
    order = _short_id(e.get("order_id", ""))
    if kind == "rental_order_placed":
        return (f"rental: order {order} placed, {format_btc(e.get('amount_btc'))} BTC in escrow: {reason}")
    if kind == "rental_order_resized":
        return (f"rental: order {order} now {format_hashrate(e.get('limit_hs'))} at "
                f"{format_price(e.get('price'), price_decimals)} BTC/PH/day: {reason}")
    if kind == "rental_order_refilled":
        return f"rental: order {order} refilled with {format_btc(e.get('amount_btc'))} BTC: {reason}"
    if kind == "rental_order_cancelled":
        return f"rental: order {order} cancelled, {format_btc(e.get('spent_btc'))} BTC spent: {reason}"
    return f"rental: {reason}" if reason else f"rental: {kind.removeprefix('rental_').replace('_', ' ')}"


class Story:
    """The terminal: a line per status tick or event, stamped with seconds since the demo began."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.seen = 0  # events of the service's bus already told

    def t(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str, t: float | None = None) -> None:
        _out(f"[{self.t() if t is None else t:5.1f}s] {text}")

    def events(self, service: ProxyService) -> None:
        """Tell the events of the story that happened since the last call."""
        events = service.events.recent(1000)
        new = events[self.seen:] if len(events) >= self.seen else events
        self.seen = len(events)
        ctl = service.rental
        decimals = price_decimals(ctl.quote.price_down_step) if ctl is not None and ctl.quote else None
        for event in new:
            line = describe_event(event, decimals)
            if line is not None:
                self.say(f"event: {line}", max(0.0, float(event.get("time", 0)) - self.started_wall))


def demo_config(primary_port: int, backup_port: int, rig_port: int, api_port: int,
                hold: float) -> dict[str, Any]:
    return {
        "proxy": {"listen": f"127.0.0.1:{rig_port}", "instance": "demo", "failback_hold_s": hold,
                  "rig_share_interval_s": 2.0},
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
    line = (f" | rental {view['state']}: delivered {format_hashrate(view['delivered_hs'])} of "
            f"{format_hashrate(view['target_hs'])}")
    if view["ordered_hs"]:
        line += f", order {format_hashrate(view['ordered_hs'])} gives {format_hashrate(view['rented_hs'])}"
    return line


def _rented_rigs(market: SimMarket | None) -> int:
    return sum(o.rigs_working() for o in market.alive_orders()) if market is not None else 0


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


def _status_line(service: ProxyService, fleet: RigFleet, expected: int | None = None, rented: int = 0) -> str:
    """What an operator watches, in words and rounded figures (``rented``: the marketplace's rigs
    among the connected ones)."""
    assert service.view is not None
    now = service.now()
    status = service.view.status(now)
    pools = service.view.pools(now)
    accepted = sum(p["accepted"] for p in pools)
    rejected = sum(p["rejected_total"] for p in pools)
    lost = sum(p["lost_total"] for p in pools)
    answered = fleet.submitted - fleet.pending
    active = ", ".join(status["active_pools"]) or "NO POOL"
    unwell = ", ".join(f"{p['name']} {p['state']}" for p in pools if p["state"] != "healthy")
    p99 = _ms(fleet.latency_quantile(0.99))
    own = status["rigs_connected"] - rented
    return (f"{own}/{expected or fleet.count} rigs" + (f" + {rented} rented" if rented else "") + ", "
            f"{format_hashrate(status['hashrate'])}, mining on {active}" + (f" ({unwell})" if unwell else "")
            + _difficulty_line(service, pools, now)
            + f" | pools: {accepted:,} accepted, {rejected:,} rejected, {lost:,} lost"
            f" | rigs: {answered:,}/{fleet.submitted:,} submits answered, p99 {p99}, "
            f"{fleet.disconnects} disconnects" + _rental_line(service))


def _difficulty_line(service: ProxyService, pools: list[dict[str, Any]], now: float) -> str:
    """Per-rig difficulty under the pool's: the median rig's, and the median rig hashrate."""
    assert service.view is not None
    _, rigs = service.view.rigs(now, 0, 5000)
    mine = [r for r in rigs if r["difficulty"]]
    active = next((p for p in pools if p["active"] and p["difficulty"]), None)
    if not mine or active is None:
        return ""
    mine.sort(key=lambda r: r["difficulty"])
    median = mine[len(mine) // 2]
    rates = sorted(r["hashrate"] for r in mine)
    return (f" | rig difficulty {_pow2(median['difficulty'])} (pool {_pow2(active['difficulty'])}), "
            f"median rig {format_hashrate(rates[len(rates) // 2])}")


def _pow2(value: float) -> str:
    exponent = math.log2(value)
    return f"2^{exponent:.0f}" if exponent.is_integer() else f"{value:.3g}"


async def run_demo(args: argparse.Namespace) -> int:
    duration = max(float(args.duration), 10.0)
    rental_act = duration >= RENTAL_ACT_MIN_DURATION
    story = Story()
    # a real pool's vardiff: it raises the difficulty of the proxy's one connection for the
    # whole farm's hashrate; the proxy keeps each rig near a share every rig_share_interval_s
    primary = SimPool(SimPoolConfig(name="primary", difficulty=PRIMARY_DIFFICULTY, job_interval=10.0,
                                    vardiff=True, vardiff_target_interval_s=0.2,
                                    vardiff_retarget_shares=40, vardiff_min=PRIMARY_DIFFICULTY))
    backup = SimPool(SimPoolConfig(name="backup", difficulty=2**-21, job_interval=10.0))
    await primary.start()
    await backup.start()
    market: SimMarket | None = None
    nut: SimNut | None = None
    act: PowerAct | None = None
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
        # the third act: the rigs that come back in the second hang on a UPS (NUT simulator)
        nut = SimNut()
        await nut.start()
        act = PowerAct(nut, story.say)
        cfg["power"] = power_config(nut, "rigc.*")
    service = await _start_service(cfg)
    assert service.view is not None
    # with the rental act a third of the rigs are a separate fleet that dies and comes back
    doomed_count = args.rigs // 3 if rental_act else 0
    fleet = RigFleet("127.0.0.1", service.port, args.rigs - doomed_count, share_interval=RIG_SHARE_INTERVAL,
                     seed=7, hashrate=RIG_HASHRATE)
    doomed = (RigFleet("127.0.0.1", service.port, doomed_count, share_interval=RIG_SHARE_INTERVAL, seed=8,
                       worker_prefix="rigb", hashrate=RIG_HASHRATE) if doomed_count else None)
    returned: RigFleet | None = None
    on_mains_again: list[RigFleet] = []
    expected = args.rigs
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
        _out(f"stratum-proxy demo: {args.rigs} simulated rigs, two simulated pools and the proxy between "
             "them, all on 127.0.0.1")
        _out(f"  pools: primary on :{primary.port}, backup on :{backup.port}; rigs connect to the proxy "
             f"on :{service.port}")
        if service.api_port:
            _out(f"  dashboard: http://127.0.0.1:{service.api_port}/  (API token {DEMO_TOKEN!r})")
        log_path = getattr(args, "log_path", None)
        if log_path:
            _out(f"  full log: {log_path}" + ("" if getattr(args, "verbose", False)
                                              else "  (--verbose shows it here)"))
        _out(f"  story: the primary dies at {kill_at:.0f} s and comes back at {revive_at:.0f} s; the farm "
             f"fails back after a {args.hold:g} s hold-down; {duration:.0f} s in all")
        if rental_act:
            _out(f"  then {doomed_count} rigs die: the backfill controller rents hashpower on the simulated "
                 "marketplace until they are back (GET /api/v1/rentals); the demo runs on until the order "
                 "is cancelled")
        else:
            _out("  (the rig-failure / rented-hashpower act needs --duration >= "
                 f"{RENTAL_ACT_MIN_DURATION:g})")
        await fleet.start()
        if doomed is not None:
            await doomed.start()
        while (t := story.t()) < duration or _act_running(
                service, rental_act, rigs_dead, rigs_back, t - duration, t - rigs_back_at) or (
                act is not None and returned is not None and not act.done):
            if not killed and t >= kill_at:
                killed = True
                t_kill = time.monotonic()
                story.say(">>> killing the primary pool (TCP reset, then connection refused)")
                primary.reset_all()
                await primary.refuse()
                # let the proxy react before the next lines, so they read in the order things happened
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == fleet.count, 5,
                                     what="every rig on the backup's job")
            story.events(service)
            if killed and failover_ms is None and fleet.rigs_with_job_containing(b"backup") == fleet.count:
                times = [x for x in fleet.first_notify_after(t_kill, b"backup") if x is not None]
                if len(times) == fleet.count:
                    failover_ms = (max(times) - t_kill) * 1000
                    story.say(f"every rig had the backup's job {failover_ms:.1f} ms after the reset "
                              f"({fleet.disconnects} disconnected)", max(times) - story.started)
            if not revived and t >= revive_at:
                revived = True
                story.say(">>> the primary pool is back")
                await primary.resume()
            on_primary = service.view.active_pools() == ["primary"] and revived
            on_primary_since = (on_primary_since or t) if on_primary else None
            if (doomed is not None and not rigs_dead and on_primary_since is not None
                    and t - on_primary_since >= SETTLE_S):
                rigs_dead = True
                rigs_died_at = t
                story.say(f">>> {doomed.count} rigs die (power failure)")
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
                story.say(f">>> the {doomed.count} rigs are back")
                returned = RigFleet("127.0.0.1", service.port, doomed.count,
                                    share_interval=RIG_SHARE_INTERVAL,
                                    seed=9, worker_prefix="rigc", hashrate=RIG_HASHRATE)
                await returned.start()
                expected += doomed.count
            if (act is not None and returned is not None and not act.done and service.rental is not None
                    and (act.running or _quiet(service, t - rigs_back_at))):
                expected += await act.step(t, service, returned, functools.partial(
                    _rigs_again, service.port, returned.count, "rigc", on_mains_again))
            story.events(service)
            story.say(_status_line(service, fleet, expected, _rented_rigs(market)))
            await asyncio.sleep(1.0)
        story.events(service)
        await fleet.drain(10)
        if returned is not None and (act is None or act.dark_at is None):
            await returned.drain(10)
        for f in on_mains_again:
            await f.drain(10)
        story.say(_status_line(service, fleet, expected, _rented_rigs(market)))
        dead = [f for f in (doomed, returned if act is not None and act.dark_at is not None else None) if f]
        alive = [f for f in (fleet, returned, *on_mains_again) if f is not None and f not in dead]
        code = _summary(args, service, story, alive, dead, (primary, backup), failover_ms)
        if act is not None:
            _out("summary: " + act.summary())
            if not act.ok:
                code = code or 1
        return code
    finally:
        for f in (fleet, doomed, returned, *on_mains_again):
            if f is not None:
                with contextlib.suppress(Exception):
                    await f.stop()
        await service.stop()
        if market is not None:
            await market.stop()
        if nut is not None:
            await nut.stop()
        await primary.stop()
        await backup.stop()
        if ledger_dir is not None:
            shutil.rmtree(ledger_dir, ignore_errors=True)


def _quiet(service: ProxyService, since_back: float) -> bool:
    """The rental act is over: no order, the farm at target (no deficit being timed)."""
    ctl = service.rental
    return (ctl is not None and ctl.order is None and since_back >= SETTLE_S
            and ctl.last_action is not None and ctl.last_action.code == "ok")


async def _rigs_again(port: int, count: int, prefix: str, fleets: list[RigFleet]) -> None:
    """Rigs that were dark come back (new connections, the same worker names)."""
    again = RigFleet("127.0.0.1", port, count, share_interval=RIG_SHARE_INTERVAL, seed=10 + len(fleets),
                     worker_prefix=prefix, hashrate=RIG_HASHRATE)
    fleets.append(again)
    await again.start()


def _summary(args: argparse.Namespace, service: ProxyService, story: Story,
             living: list[RigFleet], dead: list[RigFleet], pools: tuple[SimPool, SimPool],
             failover_ms: float | None) -> int:
    """The closing lines: what happened and whether any rig noticed; the exit status."""
    events = service.events.recent(1000)
    switches = [e for e in events if e["kind"] == "pool_switch"]
    _out("summary: switches " + "; ".join(
        f"{', '.join(e['from_pools']) or 'none'} -> {', '.join(e['to_pools']) or 'none'} at "
        f"{max(0.0, e['time'] - story.started_wall):.0f} s ({e['reason']})" for e in switches))
    failover = f"{failover_ms:.1f} ms" if failover_ms is not None else "n/a"
    invalid = sum(1 for pool in pools for s in pool.shares if not s.valid)
    disconnects = sum(f.disconnects for f in (*living, *dead))
    pending = sum(f.pending for f in living)
    _out(f"summary: {args.rigs} rigs, {disconnects} disconnects, {sum(f.submitted for f in living):,} "
         f"submits, {pending} unanswered, {sum(sum(f.rejected.values()) for f in living)} rejected, "
         f"every rig on the backup's job {failover} after the reset, {invalid} invalid shares at the pools")
    if service.rental is not None:
        placed = sum(1 for e in events if e["kind"] == "rental_order_placed")
        cancelled = sum(1 for e in events if e["kind"] == "rental_order_cancelled")
        view = service.rental.view()
        spent, left = format_btc(view["spent_today_btc"] or 0), format_btc(view["budget_left_btc"] or 0)
        _out(f"summary: rental orders placed {placed}, cancelled {cancelled}, open "
             f"{1 if view['active_order'] else 0}; spent today {spent} BTC (simulated market, an hour a "
             f"second), budget left {left} BTC")
    ok = disconnects == 0 and pending == 0
    _out("summary: " + ("no rig noticed: none disconnected, every submit answered" if ok else
                        "RIGS NOTICED: see the disconnects and unanswered submits above")
         + (f"; full log in {args.log_path}" if getattr(args, "log_path", None) else ""))
    return 0 if ok else 1
