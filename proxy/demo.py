"""``stratum-proxy demo``: the whole story on loopback.

Two simulated pools, a fleet of simulated rigs, the proxy and its API/dashboard; part-way
the primary pool dies (TCP reset, then refuses connections), later it comes back and the
farm fails back after the hold-down.  A status line each second shows what an operator
would watch; the summary at the end says whether any rig noticed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from .config import load_dict
from .core.report import pools_view, status_view
from .net.service import ProxyService
from .sim.pool import SimPool, SimPoolConfig
from .sim.rigs import RigFleet

DEMO_TOKEN = "demo-token"


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


def _status_line(t: float, service: ProxyService, fleet: RigFleet) -> str:
    assert service.core is not None
    now = service.now()
    status = status_view(service.core, now)
    pools = []
    for view in pools_view(service.core, now):
        mark = "*" if view["active"] else " "
        pools.append(f"{mark}{view['name']}({view['state']}, acc {view['accepted']}, "
                     f"rej {view['rejected_total']}, lost {view['lost_total']})")
    p50 = fleet.latency_quantile(0.5)
    p99 = fleet.latency_quantile(0.99)
    lat = f"{p50 * 1000:.2f}/{p99 * 1000:.2f} ms" if p50 is not None and p99 is not None else "-"
    return (f"t={t:5.1f}s rigs {status['rigs_connected']}/{fleet.count} "
            f"active={','.join(status['active_pools']) or 'NONE'} | {' '.join(pools)} | "
            f"rig submits {fleet.submitted} answered {fleet.submitted - fleet.pending} "
            f"p50/p99 {lat} | disconnects {fleet.disconnects}")


async def run_demo(args: argparse.Namespace) -> int:
    duration = max(float(args.duration), 10.0)
    primary = SimPool(SimPoolConfig(name="primary", difficulty=2**-22, job_interval=10.0))
    backup = SimPool(SimPoolConfig(name="backup", difficulty=2**-21, job_interval=10.0))
    await primary.start()
    await backup.start()
    service = await _start_service(demo_config(primary.port, backup.port, args.port, args.api_port,
                                               args.hold))
    assert service.core is not None
    fleet = RigFleet("127.0.0.1", service.port, args.rigs, share_interval=1.0, seed=7)
    seen_events = 0
    kill_at, revive_at = duration * 0.25, duration * 0.45
    killed = revived = False
    t_kill = 0.0
    failover_ms: float | None = None
    try:
        _out(f"demo: pools on 127.0.0.1:{primary.port} (primary) and :{backup.port} (backup); "
             f"proxy for rigs on 127.0.0.1:{service.port}")
        if service.api_port:
            _out(f"demo: dashboard http://127.0.0.1:{service.api_port}/  (token {DEMO_TOKEN!r})")
        _out(f"demo: {args.rigs} rigs; primary dies at {kill_at:.0f}s, returns at {revive_at:.0f}s, "
             f"failback after a {args.hold:g}s hold-down; {duration:.0f}s in all")
        await fleet.start()
        start = time.monotonic()
        while (t := time.monotonic() - start) < duration:
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
            events = service.core.events.recent(1000)
            for event in events[seen_events:] if len(events) >= seen_events else events:
                if event["kind"] in ("pool_switch", "pool_health", "pool_up"):
                    _out(f"event: {event['kind']} " + " ".join(
                        f"{k}={v}" for k, v in event.items() if k not in ("seq", "time", "kind")))
            seen_events = len(events)
            _out(_status_line(t, service, fleet))
            await asyncio.sleep(1.0)
        await fleet.drain(10)
        _out(_status_line(time.monotonic() - start, service, fleet))
        switches = [e for e in service.core.events.recent(1000) if e["kind"] == "pool_switch"]
        _out("demo summary: switches " + " ; ".join(
            f"{','.join(e['from_pools']) or '-'} -> {','.join(e['to_pools']) or '-'} ({e['reason']})"
            for e in switches))
        failover = f"{failover_ms:.1f} ms" if failover_ms is not None else "n/a"
        invalid = sum(1 for s in [*primary.shares, *backup.shares] if not s.valid)
        _out(f"demo summary: rigs {fleet.count}, disconnects {fleet.disconnects}, "
             f"submits {fleet.submitted}, unanswered {fleet.pending}, "
             f"rejected {sum(fleet.rejected.values())}, failover {failover}, "
             f"invalid shares at pools {invalid}")
        return 0 if fleet.disconnects == 0 and fleet.pending == 0 else 1
    finally:
        with contextlib.suppress(Exception):
            await fleet.stop()
        await service.stop()
        await primary.stop()
        await backup.stop()
