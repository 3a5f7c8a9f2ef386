"""Fault injection on real loopback sockets: two sim pools, the proxy, 50 sim rigs.

Shared by the pool-fault and hostile-rig suites: the farm of ``tests/farm_fixture.py`` with
this suite's defaults (fast rigs, short detection windows), an injectable resolver, and the
per-case summary written to artifacts/accounting.json.  The TLS front, the certificates and
the share-accounting check every case ends with live in ``tests/farm_fixture.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.farm_fixture import running_farm

RIGS = 50
SHARE_INTERVAL = 0.2
ARTIFACTS = Path(__file__).parent / "artifacts"
SUMMARY = ARTIFACTS / "accounting.json"
SUMMED = ("rig_submits", "rig_accepted", "proxy_submits", "proxy_accepted", "proxy_rejected",
          "below_pool_target", "forwarded", "pool_accepted", "pool_rejected", "lost",
          "rig_disconnects", "unanswered_rig_submits")

# Short windows so a case takes about a second: a share unanswered for 1 s marks a pool silent.
FAULT_PROXY = {
    "silent_timeout_s": 1.0,
    "failback_hold_s": 60.0,  # the farm stays on the backup for the rest of a case
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "connect_timeout_s": 1.0,
}
FAULT_FLEET = {
    "share_interval": SHARE_INTERVAL,
    "seed": 7,
    "latency_window": 1_000_000,  # keep every sample: windows are sliced
}


class Resolver:
    """The Dialer's injectable resolver: a name table, and names that fail like a dead DNS."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = dict(table)
        self.broken: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    async def __call__(self, host: str) -> str:
        self.calls[host] += 1
        if host in self.broken or host not in self.table:
            self.failures[host] += 1
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


@pytest.fixture
async def fault_farm():
    """Primary + backup sim pools (jobs every 2 s), the proxy, one fleet of fast rigs."""
    async with running_farm(pool_defaults={"job_interval": 2.0}, proxy_defaults=FAULT_PROXY,
                            fleet_defaults=FAULT_FLEET) as farm:
        yield farm


def record(suite: str, case: str, totals: dict[str, Any], seconds: float, **extra: Any) -> None:
    """Merge one case's totals into artifacts/accounting.json (the longest run is quoted)."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        data = json.loads(SUMMARY.read_text())
    except (OSError, ValueError):
        data = {}
    cases = data.setdefault("cases", {})
    cases[f"{suite}::{case}"] = {"suite": suite, "case": case, "seconds": round(seconds, 3),
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra, **totals}
    data["longest_run"] = max(cases.values(), key=lambda c: c["seconds"])
    summed: Counter[str] = Counter()
    for c in cases.values():
        summed.update({k: c[k] for k in SUMMED})
    data["all_cases"] = dict(summed)
    data["faults_covered"] = sorted(c["case"] for c in cases.values() if c["suite"] == "pool_faults")
    data["bad_inputs_covered"] = sorted(c["case"] for c in cases.values()
                                        if c["suite"] == "hostile_rigs")
    data["counts"] = {"pool_faults": len(data["faults_covered"]),
                      "hostile_rig_inputs": len(data["bad_inputs_covered"])}
    tmp = SUMMARY.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(SUMMARY)
