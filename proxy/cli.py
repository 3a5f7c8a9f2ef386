"""Command line: ``stratum-proxy run | check-config | demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from . import __version__
from .config import Config, ConfigError, load
from .farm.config import FarmConfig

log = logging.getLogger("proxy.cli")

# beyond the drain window: closing rigs, the last history flush, the pool connections
STOP_BOUND_S = 10.0


def _install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _describe_fixed_layout(prefix: int, e2_size: int) -> list[str]:
    need = prefix + e2_size
    lines = [f"rigs get extranonce1 = {prefix}-byte proxy prefix, extranonce2_size = {e2_size}"]
    if prefix == 0:
        lines.append("  prefix 0: one upstream connection per rig on every pool (no aggregation)")
    else:
        lines.append(f"  aggregation: up to {256 ** prefix:,} rigs per upstream "
                     "connection (more connections are recruited beyond that)")
    lines.append(f"  pools should offer extranonce2_size >= {need}; a narrower pool takes rigs only by "
                 "mining.set_extranonce (rigs that subscribed to it) or client.reconnect, one upstream "
                 "connection per rig, and is reported in status and events")
    if e2_size < 4:
        lines.append("  warning: extranonce2_size < 4; some firmware wants at least 4")
    return lines


def describe(config: Config) -> str:
    """What would run: the rig-side extranonce layout and, per pool, what it must offer."""
    p = config.proxy
    lines = [
        f"config {config.path or '(embedded)'} is valid",
        f"instance {p.instance}: rigs connect to {p.listen}",
    ]
    if p.extranonce_prefix_size == "auto" or p.extranonce2_size == "auto":
        lines += [
            "extranonce layout: auto. At start the proxy learns every enabled pool's "
            f"extranonce2_size (rigs' subscribe answers wait up to layout_wait_s = {p.layout_wait_s:g}s;",
            "  sizes seen before a restart count too) and takes the widest layout that fits all:",
            "  smallest pool extranonce2_size >= 6: 2-byte prefix + 4 (65,536 rigs per upstream connection);",
            "  5: 1 + 4; 4: 1 + 3 (256 rigs per connection); 3: 0 + 3 (one connection per rig).",
            "  A pool that later turns out narrower takes rigs only by mining.set_extranonce or "
            "client.reconnect (an event); /api/v1/status shows the layout in force and why",
        ]
    else:
        lines += _describe_fixed_layout(p.extranonce_prefix_size, p.extranonce2_size)
    if p.silent_timeout_s == "auto":
        silence = (f"suspect when a request waits over {p.silent_p99_multiple:g} x the pool's p99 "
                   f"latency (between {p.silent_floor_s:g}s and {p.silent_ceiling_s:g}s) or no job "
                   f"comes for 3 x its pace; rigs return {p.suspect_hold_s:g}s after it answers; "
                   f"silent (down) after {p.silent_ceiling_s:g}s")
    else:
        silence = f"silent after {p.silent_timeout_s:g}s without an answer"
    lines.append(f"failover: {silence}; stale after {p.max_job_age_s:g}s without a job; "
                 f"failback hold-down {p.failback_hold_s:g}s")
    if p.proxy_protocol != "off":
        lines.append(f"PROXY protocol {p.proxy_protocol} on the rig port: rigs' real addresses, "
                     f"believed only from {', '.join(p.trusted_proxies)}; other connections are closed")
    lines.append(f"api: {config.api.listen}" + ("" if config.api.enabled else " (disabled)")
                 + ("" if config.api.token else " (no token: writes refused)"))
    if config.rental is not None:
        lines.append(_describe_rental(config.rental)
                     + (" (run by the instance the farm elects, ledger in etcd)" if config.cluster else ""))
    if config.cluster is not None:
        c = config.cluster
        tls = (" (TLS" + (f", CA {c.ca_file}" if c.ca_file else "") +
               (", client certificate" if c.cert_file else "") + ")") if c.ca_file or c.cert_file else ""
        lines.append(f"cluster: farm {c.farm!r} on etcd {', '.join(c.etcd)}{tls}; registered under a "
                     f"{c.lease_ttl_s}s lease, summary every {c.publish_s:g}s; pool settings from etcd "
                     f"(watched); etcd calls time out after {c.timeout_s:g}s (then writes get 503)")
    if config.power is not None:
        from .power.config import describe_power

        lines.extend(describe_power(config.power, config.rental is not None))
        if config.cluster is not None:
            lines.append("  power in the farm: this instance's plan is published in its etcd summary and the "
                         "elected leader rents for the members' sum; API curtailments are kept in etcd and "
                         "applied by every instance")
    lines.append("pools (lower priority number is preferred):")
    for pool in sorted(config.pools, key=lambda x: x.priority):
        flags = [] if pool.enabled else ["disabled"]
        flags.append(f"standby={pool.standby}")
        if pool.tls:
            flags.append("TLS" + ("" if pool.tls_verify else " (verification OFF)"))
        lines.append(f"  [{pool.priority}] {pool.name}: {pool.url} user={pool.user} "
                     f"weight={pool.weight:g} {' '.join(flags)}")
    if config.listeners or p.protocol != "sv1":
        from .listeners import resolve

        lines.append("rig listeners (each fails over on its own among its pools):")
        for listener in resolve(config):
            lines.append(f"  {listener.name}: {listener.listen} {listener.protocol}: "
                         + ", ".join(x.name for x in listener.pools))
    return "\n".join(lines)


def describe_farm(config: FarmConfig) -> str:
    f = config.farm
    lines = [f"farm config {config.path} is valid",
             f"farm {f.name}: API and dashboard on {f.listen}"
             + ("" if f.token else " (no token: writes refused)"),
             f"polls every instance every {f.poll_s:g}s (down after {f.timeout_s:g}s without an answer)"
             + ("" if config.cluster else f"; missed changes retried every {f.retry_s:g}s")]
    if config.cluster is None:
        lines.append("instances:")
    lines += [f"  {i.name}: {i.api}" + ("" if i.token else " (no token: changes cannot reach it)")
              for i in config.instances]
    if config.rental is not None:
        lines.append(_describe_rental(config.rental) + " (once for the whole farm)")
    if config.cluster is not None:
        c = config.cluster
        lines.append(f"cluster: reads farm {c.farm!r} from etcd {', '.join(c.etcd)} "
                     "(instances are its registered members; pool writes go to etcd)")
    return "\n".join(lines)


def _describe_rental(r: Any) -> str:
    cap = (f"max_price the hashprice {r.max_premium:+.1%}" if r.follows_hashprice
           else f"max_price {r.max_price} BTC/PH/day")
    return (f"rental: {r.provider} at {r.api_url}, target {r.target_hashrate} -> {r.pool}, "
            f"{cap}, budget {r.daily_budget_btc} BTC/day, "
            f"ledger {r.ledger}; credentials from ${r.key_env} ${r.secret_env} ${r.org_env}")


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import read_toml
    from .farm.config import load_farm_dict

    try:
        data = read_toml(args.file)
        if "farm" in data or "instances" in data:  # the control plane's file
            print(describe_farm(load_farm_dict(data, str(args.file))))
            return 0
        config = load(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(config))
    return 0


async def _until_signal(on_hup: Callable[[], None] | None = None) -> None:
    """Wait for SIGTERM or SIGINT; SIGHUP calls ``on_hup`` meanwhile."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()


async def _run(config: Config) -> int:
    from .net.service import ProxyService

    service = ProxyService(config)
    try:
        await service.start()
    except (ConfigError, OSError) as exc:
        # e.g. the marketplace credentials are not in the environment, the port is taken
        log.error("cannot start: %s", exc)
        await asyncio.wait_for(service.stop(), STOP_BOUND_S)
        return 2

    def on_hup() -> None:
        try:
            result = service.reload()
            log.info("config reloaded: %s", result)
        except ConfigError as exc:
            log.error("config reload refused, running config kept: %s", exc)

    log.info("stratum-proxy %s running: rigs on port %d, api on port %s", __version__,
             service.port, service.api_port or "-")
    await _until_signal(on_hup)
    log.info("stopping")
    drain_s = config.proxy.shutdown_drain_s
    try:
        await asyncio.wait_for(service.stop(drain_s=drain_s), drain_s + STOP_BOUND_S)
    except TimeoutError:
        log.error("stop took longer than %gs; exiting anyway", drain_s + STOP_BOUND_S)
        return 1
    log.info("stopped")
    return 0


async def _run_farm(config: FarmConfig) -> int:
    from .farm.service import FarmService

    farm = FarmService(config)
    try:
        await farm.start()
    except (ConfigError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await asyncio.wait_for(farm.stop(), STOP_BOUND_S)
        return 2
    await _until_signal()
    await asyncio.wait_for(farm.stop(), STOP_BOUND_S)
    log.info("farm control plane stopped")
    return 0


def _load_or_exit(loader: Callable[[str], Any], path: str) -> Any:
    try:
        return loader(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_or_exit(load, args.config)
    if config is None:
        return 2
    _install_uvloop()
    return asyncio.run(_run(config))


def cmd_farm(args: argparse.Namespace) -> int:
    from .farm.config import load_farm

    config = _load_or_exit(load_farm, args.config)
    if config is None:
        return 2
    _install_uvloop()
    return asyncio.run(_run_farm(config))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, setup_logging

    args.log_path = setup_logging(args.log_file, args.verbose)
    _install_uvloop()
    return asyncio.run(run_demo(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratum-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stratum-proxy {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("-c", "--config", required=True)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file (a proxy's or the farm's) "
                                                 "and show what would run")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)
    farm = sub.add_parser("farm", help="the farm control plane over several proxy instances")
    farm.add_argument("-c", "--config", required=True)
    farm.set_defaults(func=cmd_farm)
    demo = sub.add_parser("demo", help="the whole story on loopback with simulated pools and rigs")
    demo.add_argument("--duration", type=float, default=90.0)
    demo.add_argument("--rigs", type=int, default=50)
    demo.add_argument("--hold", type=float, default=15.0, help="failback hold-down seconds")
    demo.add_argument("--api-port", type=int, default=8080)
    demo.add_argument("--port", type=int, default=0, help="rig port (0 = any free port)")
    demo.add_argument("--verbose", action="store_true",
                      help="show the full log on the terminal too (it always goes to the log file)")
    demo.add_argument("--log-file", default=None,
                      help="where the full log goes (default: a new file in the temp directory)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
