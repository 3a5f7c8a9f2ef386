"""``python -m benchmarks.powerplan [--rigs N] [--ups N]``: the power planner's cost per plan.

The power monitor plans every few seconds (each controller step, each UPS poll, each API
read) over every connected rig, on the event loop: the first plan after start or after a
UPS or curtailment change matches every rig against every selector (worker globs, address
CIDRs); later ones reuse the match.  Prints both, in milliseconds.  In-process, no sockets.
"""

from __future__ import annotations

import argparse
import time

from proxy.power.match import RigMatcher
from proxy.power.nutproto import Power, UpsReading
from proxy.power.plan import RigFigure, UpsState, plan


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.powerplan", description=__doc__)
    parser.add_argument("--rigs", type=int, default=10_000)
    parser.add_argument("--ups", type=int, default=10)
    args = parser.parse_args()
    racks = max(args.ups * 2, 1)
    rigs = [RigFigure(i, (f"farm1.rack{i % racks}.r{i}",),
                      f"10.{i % racks}.{i // 250 % 250}.{i % 250}:4000", 1e14) for i in range(args.rigs)]
    on_battery = UpsReading(Power.BATTERY, "OB", 50.0, 600.0)
    ups = [UpsState(f"ups{k}", RigMatcher.build([f"farm1.rack{k}.*"], [f"10.{k}.0.0/16"]), on_battery, 0.0,
                    Power.BATTERY) for k in range(args.ups)]
    cache: dict = {}
    times = []
    for _ in range(6):
        started = time.perf_counter()
        plan(ups, [], rigs, 1.0, 300.0, 60.0, cache)
        times.append((time.perf_counter() - started) * 1000)
    print(f"{args.rigs:,} rigs x {args.ups} UPSes: first plan {times[0]:.1f} ms, "
          f"then {min(times[1:]):.1f}-{max(times[1:]):.1f} ms")


if __name__ == "__main__":
    main()
