"""``python -m benchmarks [scenario ...] [--smoke] [--rigs N] [--rate R] [--duration S] [--out DIR]
[--instances N] [--phases P,...] [--sizes N,...]``

Runs the scenarios (default: all) against simulated pools on loopback, each with the
proxy in its own process (``python -m proxy run -c <generated toml>``), the pool in
another and the load generator in this one. Writes ``<out>/<scenario>.json`` and
``<out>/<scenario>.md`` (and PNG plots when matplotlib is importable). Exits non-zero only
when the harness itself fails, never because a figure misses its bar.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import connections, failover, latency, throughput, vardiff
from .common import REPO, Processes, describe_machine, machine_info, write_json

SCENARIOS = {
    "latency": latency,
    "throughput": throughput,
    "connections": connections,
    "failover": failover,
    "vardiff": vardiff,
}
# hard limits per scenario (seconds): the whole scenario, processes included
BUDGET = {"latency": 240, "throughput": 240, "connections": 600, "failover": 900,
          "vardiff": 300}
SMOKE_BUDGET = 45


@dataclass
class Context:
    args: argparse.Namespace
    smoke: bool
    procs: Processes
    out: Path
    workdir: Path
    machine: dict[str, Any]

    def log(self, text: str) -> None:
        print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny and fast (results go to a temp dir unless --out is given)")
    parser.add_argument("--rigs", type=int, default=0, help="rigs / connections (per scenario default)")
    parser.add_argument("--rate", type=int, default=0,
                        help="latency: the one rate to run; throughput: the top of the ramp")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds per measured phase (latency phase, throughput step, "
                             "vardiff window)")
    parser.add_argument("--out", default="", help="results directory")
    parser.add_argument("--instances", type=int, default=1,
                        help="throughput, connections: proxy processes sharing the rig port "
                             "(SO_REUSEPORT, one per core); results go to <scenario>-x<N>.json")
    parser.add_argument("--phases", default="",
                        help="failover: comma-separated phases to run, of reset, stall, per-rig, core "
                             "(default: all)")
    parser.add_argument("--sizes", default="",
                        help="failover: comma-separated rig counts for the per-rig and core phases "
                             "(default 800,1600,3200,10000; --smoke 200)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    return args


def _loop_factory(use_uvloop: bool) -> Any:
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_scenario(name: str, args: argparse.Namespace, out: Path, machine: dict[str, Any]) -> bool:
    module = SCENARIOS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    procs = Processes(workdir)
    ctx = Context(args, args.smoke, procs, out, workdir, machine)
    budget = SMOKE_BUDGET if args.smoke else BUDGET[name]
    started = time.monotonic()
    print(f"\n=== {name} (hard limit {budget} s; logs in {workdir}) ===", flush=True)
    ok = True
    result: dict[str, Any] | None = None
    try:
        with asyncio.Runner(loop_factory=_loop_factory(module.USE_UVLOOP)) as runner:
            result = runner.run(asyncio.wait_for(module.run(ctx), budget))
    except BaseException as exc:  # a harness failure: report it, clean up, go on
        ok = False
        if isinstance(exc, KeyboardInterrupt):
            procs.close()
            raise
        kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
        print(f"{name}: harness {kind}: {exc!r}", file=sys.stderr, flush=True)
        traceback.print_exc()
        for log in procs.logs:
            print(f"--- tail of {log}", file=sys.stderr)
            from .common import log_tail

            print(log_tail(log), file=sys.stderr, flush=True)
    finally:
        procs.close()
    if result is not None:
        result = {"scenario": name, "machine": machine, "smoke": args.smoke,
                  "elapsed_s": round(time.monotonic() - started, 1), **result}
        stem = name if getattr(args, "instances", 1) <= 1 else f"{name}-x{args.instances}"
        write_json(out / f"{stem}.json", result)
        md = module.markdown(result)
        (out / f"{stem}.md").write_text(md)
        print(md, flush=True)
        print(f"{name}: wrote {out / (stem + '.json')} and {stem}.md", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    if args.out:
        out = Path(args.out)
    elif args.smoke:
        out = Path(tempfile.mkdtemp(prefix="bench-smoke-results-"))
    else:
        out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(describe_machine(machine), flush=True)
    print(f"results: {out}", flush=True)
    failed = [name for name in names if not run_scenario(name, args, out, machine)]
    if failed:
        print(f"harness errors in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
