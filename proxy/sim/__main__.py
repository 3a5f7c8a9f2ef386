"""``python -m proxy.sim pool|rigs|ethpool|ethrigs``: run a simulated pool or rig fleet from a shell.

Handy for poking a proxy by hand or for the demo: each prints one status line per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from .firmware import PROFILES
from .pool import SimPool, SimPoolConfig
from .rigs import RigFleet


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m proxy.sim",
                                     description="simulated pools and rigs: Stratum V1 (ASICs) and "
                                                 "EthereumStratum/1.0.0 (GPU rigs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    pool = sub.add_parser("pool", help="run a validating pool until SIGINT/SIGTERM")
    pool.add_argument("--name", default="sim")
    pool.add_argument("--host", default="127.0.0.1")
    pool.add_argument("--port", type=int, default=3401)
    pool.add_argument("--extranonce1-size", type=int, default=4)
    pool.add_argument("--extranonce2-size", type=int, default=8)
    pool.add_argument("--difficulty", type=float, default=2.0 ** -20)
    pool.add_argument("--job-interval", type=float, default=30.0)
    pool.add_argument("--answer-delay", type=float, default=0.0)
    pool.add_argument("--reject-ratio", type=float, default=0.0)
    pool.add_argument("--version-mask", type=lambda s: int(s, 16), default=0x1FFFE000)
    pool.add_argument("--tag", default=None)
    pool.add_argument("--seed", type=int, default=None)
    pool.add_argument("--vardiff", action="store_true",
                      help="per-connection difficulty aimed at a share rate, like ckpool")
    pool.add_argument("--vardiff-interval", type=float, default=10 / 3,
                      help="seconds per share vardiff aims at (default: ckpool's 3.33)")

    rigs = sub.add_parser("rigs", help="run a rig fleet for --duration seconds")
    rigs.add_argument("--host", default="127.0.0.1")
    rigs.add_argument("--port", type=int, default=3333)
    rigs.add_argument("--count", type=int, default=10)
    rigs.add_argument("--share-interval", type=float, default=1.0)
    rigs.add_argument("--duration", type=float, default=60.0)
    rigs.add_argument("--worker-prefix", default="rig")
    rigs.add_argument("--password", default="x")
    rigs.add_argument("--no-version-rolling", action="store_true")
    rigs.add_argument("--extranonce-subscribe", action="store_true")
    rigs.add_argument("--no-pipeline", action="store_true")
    rigs.add_argument("--seed", type=int, default=None)
    rigs.add_argument("--profile", default="default", choices=sorted(PROFILES),
                      help="the firmware the rigs speak as: "
                           + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values()))
    ethpool = sub.add_parser("ethpool", help="run an EthereumStratum/1.0.0 pool until SIGINT/SIGTERM")
    ethpool.add_argument("--name", default="ethsim")
    ethpool.add_argument("--port", type=int, default=3411, help="on 127.0.0.1")
    ethpool.add_argument("--extranonce-size", type=int, default=2,
                         help="bytes of extranonce the pool gives each connection")
    ethpool.add_argument("--job-interval", type=float, default=2.0)
    ethpool.add_argument("--difficulty", type=float, default=1.0)

    ethrigs = sub.add_parser("ethrigs",
                             help="run a GPU rig fleet (EthereumStratum/1.0.0) for --duration seconds")
    ethrigs.add_argument("--host", default="127.0.0.1")
    ethrigs.add_argument("--port", type=int, default=4444)
    ethrigs.add_argument("--count", type=int, default=10)
    ethrigs.add_argument("--share-interval", type=float, default=1.0)
    ethrigs.add_argument("--duration", type=float, default=60.0)
    ethrigs.add_argument("--worker-prefix", default="gpu")
    ethrigs.add_argument("--refusers", type=int, default=0,
                         help="how many of the rigs refuse mining.set_extranonce (moved by client.reconnect)")
    return parser


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _report_until(stop: asyncio.Event, status: Callable[[], str],
                        duration: float | None = None) -> None:
    """Print ``status()`` once a second until SIGINT/SIGTERM (or ``duration`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while not stop.is_set() and (deadline is None or loop.time() < deadline):
        left = 1.0 if deadline is None else min(1.0, max(deadline - loop.time(), 0.01))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await stop.wait()
        print(status(), flush=True)


async def _run_pool(args: argparse.Namespace) -> int:
    pool = SimPool(SimPoolConfig(
        name=args.name, host=args.host, port=args.port,
        extranonce1_size=args.extranonce1_size, extranonce2_size=args.extranonce2_size,
        difficulty=args.difficulty, job_interval=args.job_interval,
        answer_delay=args.answer_delay, reject_ratio=args.reject_ratio,
        version_mask=args.version_mask, tag=args.tag, seed=args.seed,
        vardiff=args.vardiff, vardiff_target_interval_s=args.vardiff_interval))
    stop = _stop_event()
    await pool.start()
    print(f"pool {args.name} listening on {args.host}:{pool.port}", flush=True)
    try:
        await _report_until(stop, pool.status)
    finally:
        await pool.stop()
    return 0


async def _run_rigs(args: argparse.Namespace) -> int:
    fleet = RigFleet(args.host, args.port, args.count, worker_prefix=args.worker_prefix,
                     password=args.password, share_interval=args.share_interval,
                     version_rolling=not args.no_version_rolling,
                     extranonce_subscribe=args.extranonce_subscribe,
                     pipeline=not args.no_pipeline, seed=args.seed, profile=args.profile)
    stop = _stop_event()
    await fleet.start()
    try:
        await _report_until(stop, fleet.status, args.duration)
    finally:
        await fleet.stop()
    print(f"done: submitted={fleet.submitted} accepted={fleet.accepted} "
          f"rejected={dict(fleet.rejected)} disconnects={fleet.disconnects} "
          f"unanswered={fleet.unanswered()}", flush=True)
    return 0


async def _run_ethpool(args: argparse.Namespace) -> int:
    from .ethpool import EthSimPool

    pool = EthSimPool(args.name, extranonce_size=args.extranonce_size, job_interval=args.job_interval,
                      difficulty=args.difficulty)
    pool.port = args.port
    stop = _stop_event()
    await pool.start()
    print(f"EthereumStratum pool {args.name} listening on 127.0.0.1:{pool.port}", flush=True)
    try:
        await _report_until(stop, lambda: f"{args.name}: connections={len(pool.conns)} "
                                          f"accepted={pool.accepted} rejected={dict(pool.rejected)}")
    finally:
        await pool.stop()
    return 0


async def _run_ethrigs(args: argparse.Namespace) -> int:
    from .ethrigs import EthRigFleet

    fleet = EthRigFleet(args.host, args.port, args.count, share_interval=args.share_interval,
                        refusers=args.refusers, worker_prefix=args.worker_prefix)
    stop = _stop_event()
    await fleet.start()
    try:
        await _report_until(stop, lambda: (
            f"gpu rigs: accepted={fleet.total('accepted')} rejected={fleet.rejected} "
            f"pending={fleet.pending} set_extranonce={fleet.total('extranonce_changes')} "
            f"reconnects={fleet.total('reconnects')} disconnects={fleet.total('disconnects')} "
            f"connect_failures={fleet.total('connect_failures')}"), args.duration)
    finally:
        await fleet.stop()
    print(f"done: accepted={fleet.total('accepted')} rejected={fleet.rejected} "
          f"disconnects={fleet.total('disconnects')} unanswered={fleet.pending}", flush=True)
    return 0


RUNNERS = {"pool": _run_pool, "rigs": _run_rigs, "ethpool": _run_ethpool, "ethrigs": _run_ethrigs}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    runner = RUNNERS[args.command]
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
