"""The core's share path alone: CPU per share in the sans-I/O core, without sockets.

``python -m benchmarks.sharepath [--rigs 200] [--shares 50000] [--runs 5] [--out FILE]``

The proxy's core (``ProxyCore``) is driven as the glue drives it (``tests/core/harness.py``,
``benchmarks/corefailover.py``): one pool at difficulty 2^-32 (almost every nonce is a
share, so each one is checked in full and forwarded), rigs folded on its connection, and
real shares pre-computed by the load generator's own rigs (``benchmarks.loadgen.ShareRig``,
shares at the pool's target so a rig's own difficulty never refuses one). Timed, per share:

- ``submit_us``: ``core.rig_data`` with one ``mining.submit`` line: framing, rate limit,
  decode, the check (coinbase, merkle root, header, double SHA-256), the answer to the rig
  and the write to the pool;
- ``answer_us``: ``core.pool_data`` with the pool's answer to it: the verdict accounted,
  its latency observed;
- ``total_us``: the two, the core's CPU per forwarded share.

The rigs' and the pool's writes go to ``list.append`` while timed. The garbage collector
runs as in the proxy (``proxy.net.service.tune_gc``). Each run uses fresh shares; the
figure is the median run (min and max given). Exits non-zero only when the harness fails.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from typing import Any

from proxy.config import load_dict
from proxy.core.coordinator import ProxyCore
from proxy.net.service import tune_gc
from proxy.stratum import work

from .corefailover import CoreIO, PoolEnd
from .loadgen import LoadGen, ShareRig

POOL_DIFFICULTY = 2.0**-32
SHARE_RATE = 5000.0  # the clock the core is given advances at this many shares per second
_ids = re.compile(rb'"id":(\d+)')
_perf = time.perf_counter


class CoreTransport:
    """A rig's end: what the rig writes goes to the core as one ``rig_data`` call."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.rig: ShareRig | None = None
        self.session: Any = None

    def get_extra_info(self, name: str) -> Any:
        return None

    def write(self, data: bytes) -> None:
        self.farm.core.rig_data(self.session, data, self.farm.now)


class Farm:
    """A core, one pool connection answered by ``PoolEnd``, N load-generator rigs on it."""

    def __init__(self, rigs: int) -> None:
        self.now = 1000.0
        self.io = CoreIO()
        self.core = ProxyCore(load_dict({
            "proxy": {"extranonce_prefix_size": 2, "extranonce2_size": 4,
                      "max_requests_per_s": 1_000_000.0},
            "pools": [{"name": "pool", "url": "stratum+tcp://127.0.0.1:1", "user": "bench"}],
        }), self.io, self.now)
        self.pool_sent: list[bytes] = []
        conn = self.io.dialed[0]
        self.conn = conn
        self.core.pool_connected(conn, self.pool_sent.append, self.now)
        self.core.pool_data(conn, PoolEnd("pool", POOL_DIFFICULTY).answer(b"".join(self.pool_sent)),
                            self.now)
        self.gen = LoadGen("127.0.0.1", 0, rigs)
        for i in range(rigs):
            rig = ShareRig(self.gen, i)
            transport = CoreTransport(self)
            transport.session = self.core.rig_connected(f"10.0.{i >> 8}.{i & 255}:4028", rig.data_received,
                                                        lambda: None, self.now)
            rig.connection_made(transport)
            self.gen.rigs.append(rig)
        if self.gen.ready != rigs:
            raise RuntimeError(f"{self.gen.ready} of {rigs} rigs got work")
        target = work.difficulty_to_target(POOL_DIFFICULTY)
        for rig in self.gen.rigs:
            rig.target = target  # the highest difficulty a rig may get: every share passes
        self.sessions = [rig.transport.session for rig in self.gen.rigs]

    def run(self, shares: int) -> dict[str, Any]:
        """Time ``shares`` submits and their answers; the rigs' answers must all be true."""
        plan, _skipped = self.gen.prepare(shares)
        sessions, n = self.sessions, len(self.sessions)
        to_rigs: list[bytes] = []
        for session in sessions:
            session.send = to_rigs.append
        self.pool_sent.clear()
        core, conn = self.core, self.conn
        step = 1.0 / SHARE_RATE
        now = self.now
        submit_s = 0.0
        for seq, line in plan:
            now += step
            session = sessions[seq % n]
            t0 = _perf()
            core.rig_data(session, line, now)
            submit_s += _perf() - t0
        answers = [b'{"id":%s,"result":true,"error":null}\n' % m.group(1)
                   for m in _ids.finditer(b"".join(self.pool_sent)) if m.group(1) != b"null"]
        answer_s = 0.0
        for answer in answers:
            t0 = _perf()
            core.pool_data(conn, answer, now)
            answer_s += _perf() - t0
        self.now = now + 1.0
        accepted = sum(chunk.count(b'"result":true') for chunk in to_rigs)
        if accepted != len(plan) or len(answers) != len(plan):
            raise RuntimeError(f"{len(plan)} shares: {accepted} answered true, {len(answers)} forwarded")
        per = 1e6 / len(plan)
        return {"shares": len(plan), "submit_us": round(submit_s * per, 2),
                "answer_us": round(answer_s * per, 2), "total_us": round((submit_s + answer_s) * per, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharepath",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rigs", type=int, default=200)
    parser.add_argument("--shares", type=int, default=50_000, help="shares per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", help="write the result as JSON to this file")
    args = parser.parse_args(argv)
    tune_gc()
    farm = Farm(args.rigs)
    farm.run(min(args.shares, 2000))  # warm-up: every rig retargeted once, caches filled
    runs = [farm.run(args.shares) for _ in range(args.runs)]
    summary: dict[str, Any] = {"rigs": args.rigs, "shares_per_run": args.shares, "runs": runs}
    for key in ("submit_us", "answer_us", "total_us"):
        values = [r[key] for r in runs]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
