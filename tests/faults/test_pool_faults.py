"""Every pool fault, injected on the primary while 50 rigs mine through the proxy.

Each case: two sim pools (primary, backup), the proxy, 50 sim rigs submitting real shares
about five times a second each.  The fault hits the primary mid-run.  Whatever it is, the
proxy stays up, no rig is disconnected, every rig submit is answered, and after quiescing the
share ledger balances exactly (``check_accounting``): per pool forwarded = accepted +
rejected + timeouts + lost (by reason), the rigs' own tallies equal the proxy's, and each
pool's verdicts agree with what the proxy recorded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.sim import RawClient, SimPool, wait_until
from tests.farm_fixture import Farm, TlsFront, check_accounting, quiesce

from .conftest import RIGS, Resolver, record

PRIMARY_HOST = "primary.pool.test"  # resolved only by the injected resolver: no real lookup
BACKUP_HOST = "backup.pool.test"


@dataclass
class Ctx:
    farm: Farm
    primary: SimPool
    backup: SimPool
    front: TlsFront | None = None
    resolver: Resolver | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def view(self, name: str = "primary") -> dict[str, Any]:
        return self.farm.view(name)


@dataclass
class Case:
    inject: Callable[[Ctx], Awaitable[None]]
    failover: bool  # the farm must end up on the backup (else it must stay on the primary)
    error: str | None = None  # what the primary's last_error must say (regex)
    transport: str = "tcp"  # "tcp", "tls" (behind a TlsFront) or "dns" (hostnames + resolver)
    primary: dict[str, Any] = field(default_factory=dict)  # SimPoolConfig overrides
    check: Callable[[Ctx], Awaitable[None]] | None = None  # case-specific assertions


# --- the faults -------------------------------------------------------------------------------

async def _reset(ctx: Ctx) -> None:
    ctx.primary.reset_all()  # RST; the pool keeps listening, so the redial succeeds


async def _refused(ctx: Ctx) -> None:
    await ctx.primary.refuse()  # RST, and every redial is refused


async def _stall(ctx: Ctx) -> None:
    ctx.primary.stall()


async def _half_open(ctx: Ctx) -> None:
    ctx.primary.half_open()


async def _slow_drip(ctx: Ctx) -> None:
    ctx.primary.slow_drip(interval=0.002, chunk=2)  # ~1 kB/s: the rigs' answers need ~10 kB/s
    # answers written before the drip have arrived by now; later ones come 2 bytes at a time
    await wait_until(lambda: ctx.primary.dripped_bytes >= 300, 5, what="bytes dripping")
    ctx.notes["accepted_at_drip"] = ctx.view()["accepted"]


async def _check_drip(ctx: Ctx) -> None:
    # lines delivered a couple of bytes at a time were reassembled and counted
    assert ctx.view()["accepted"] > ctx.notes["accepted_at_drip"]


async def _partial_line(ctx: Ctx) -> None:
    assert ctx.primary.partial_line_then_close() >= 1


async def _garbage(ctx: Ctx) -> None:
    ctx.primary.send_garbage(b"\x00\xff this is not json {{{")


async def _over_long(ctx: Ctx) -> None:
    ctx.primary.send_over_long_line(64 * 1024)  # the proxy's cap is 16 KiB


async def _wrong_ids(ctx: Ctx) -> None:
    ctx.primary.wrong_ids("offset")


async def _check_late(ctx: Ctx) -> None:
    assert ctx.view()["late_answers"] >= 1  # wrong-id answers were seen and matched nothing


async def _unknown_ids(ctx: Ctx) -> None:
    ctx.primary.unknown_id_answers()


async def _check_unknown(ctx: Ctx) -> None:
    assert ctx.primary.unknown_answers_sent >= RIGS
    await wait_until(lambda: ctx.view()["late_answers"] == ctx.primary.unknown_answers_sent, 5,
                     what="every unknown-id answer seen and ignored")


async def _duplicates(ctx: Ctx) -> None:
    ctx.primary.duplicate_answers()


async def _check_duplicates(ctx: Ctx) -> None:
    assert ctx.primary.duplicate_answers_sent >= RIGS
    await wait_until(lambda: ctx.view()["late_answers"] == ctx.primary.duplicate_answers_sent, 5,
                     what="every duplicate answer seen and ignored")


async def _flap(ctx: Ctx) -> None:
    for _ in range(3):
        ctx.primary.reset_all()
        await ctx.primary.refuse()
        await wait_until(lambda: ctx.view()["state"] == "down", 5, what="primary down")
        await ctx.primary.resume()
        await wait_until(lambda: ctx.view()["state"] == "healthy", 5, what="primary back")


async def _check_flap(ctx: Ctx) -> None:
    assert ctx.primary.total_connections >= 4
    switches = [e["to_pools"] for e in ctx.farm.events("pool_switch")]
    assert switches == [["primary"], ["backup"]]  # one failover; the flaps never moved the farm


async def _dns_down(ctx: Ctx) -> None:
    assert ctx.resolver is not None
    ctx.notes["calls"] = ctx.resolver.calls[PRIMARY_HOST]
    ctx.resolver.broken.add(PRIMARY_HOST)
    ctx.primary.reset_all()  # the connection drops; the redial must resolve the name again


async def _check_dns(ctx: Ctx) -> None:
    assert ctx.resolver is not None
    await wait_until(lambda: ctx.resolver.failures[PRIMARY_HOST] >= 2, 5, what="redials keep resolving")
    assert ctx.primary.total_connections == 1  # no connection got through after the fault


async def _dns_on_reconnect(ctx: Ctx) -> None:
    # the pool moves us to a name that does not resolve
    ctx.primary.send_reconnect(host="moved.pool.test", port=ctx.primary.port)


async def _check_moved(ctx: Ctx) -> None:
    assert ctx.resolver is not None and ctx.resolver.failures["moved.pool.test"] >= 1


def _tls(mode: str) -> Callable[[Ctx], Awaitable[None]]:
    async def inject(ctx: Ctx) -> None:
        assert ctx.front is not None
        ctx.front.set_mode(mode)  # drops the live connection; the redial meets the fault

    return inject


def _tls_check(mode: str) -> Callable[[Ctx], Awaitable[None]]:
    async def check(ctx: Ctx) -> None:
        assert ctx.front is not None
        assert ctx.front.accepted["ok"] == 1
        await wait_until(lambda: ctx.front.accepted[mode] >= 1, 5, what=f"a redial met {mode}")

    return check


CASES: dict[str, Case] = {
    "reset": Case(_reset, True, r"reset"),
    "refused": Case(_refused, True, r"refused"),
    "silent_stall": Case(_stall, True, r"silent"),
    "half_open_tcp": Case(_half_open, True, r"silent"),
    "slow_drip": Case(_slow_drip, True, r"silent", primary={"job_interval": 60.0},
                      check=_check_drip),
    "partial_line_then_close": Case(_partial_line, True, r"closed by pool|reset by pool"),
    "garbage": Case(_garbage, True, r"garbage"),
    "over_long_line": Case(_over_long, True, r"over-long"),
    "wrong_jsonrpc_ids": Case(_wrong_ids, True, r"silent", check=_check_late),
    "answers_to_unknown_ids": Case(_unknown_ids, False, check=_check_unknown),
    "duplicate_answers": Case(_duplicates, False, check=_check_duplicates),
    "flapping": Case(_flap, True, check=_check_flap),
    "dns_failure": Case(_dns_down, True, r"DNS lookup failed", transport="dns", check=_check_dns),
    "dns_failure_on_client_reconnect": Case(_dns_on_reconnect, True, r"DNS lookup failed",
                                            transport="dns", check=_check_moved),
    "tls_plain_tcp_pool": Case(_tls("plain"), True, r"TLS error", transport="tls",
                               check=_tls_check("plain")),
    "tls_closed_mid_handshake": Case(_tls("hangup"), True, r"TLS handshake failed",
                                     transport="tls", check=_tls_check("hangup")),
    "tls_bad_certificate": Case(_tls("bad_cert"), True, r"certificate", transport="tls",
                                check=_tls_check("bad_cert")),
}


async def _build(farm: Farm, case: Case, certs) -> Ctx:
    primary = await farm.pool("primary", **case.primary)
    backup = await farm.pool("backup")
    ctx = Ctx(farm, primary, backup)
    p_entry: dict[str, Any] = {"name": "primary", "url": f"stratum+tcp://127.0.0.1:{primary.port}"}
    b_entry: dict[str, Any] = {"name": "backup", "url": f"stratum+tcp://127.0.0.1:{backup.port}"}
    if case.transport == "tls":
        ctx.front = await farm.tls_front(primary, certs)
        p_entry.update(url=f"stratum+ssl://127.0.0.1:{ctx.front.port}", ca_file=str(certs["good"][0]))
    elif case.transport == "dns":
        ctx.resolver = Resolver({PRIMARY_HOST: "127.0.0.1", BACKUP_HOST: "127.0.0.1"})
        p_entry["url"] = f"stratum+tcp://{PRIMARY_HOST}:{primary.port}"
        b_entry["url"] = f"stratum+tcp://{BACKUP_HOST}:{backup.port}"
    await farm.start_proxy([p_entry, b_entry], resolver=ctx.resolver)
    fleet = await farm.start_fleet(RIGS)
    await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"primary") == RIGS, 10,
                           "every rig on the primary's job")
    await wait_until(lambda: ctx.view()["accepted"] >= RIGS, 10, what="mining on the primary")
    return ctx


async def _still_serving(farm: Farm, tag: bytes) -> None:
    """A rig arriving after the fault is subscribed, authorized and given a job at once."""
    assert farm.proxy is not None
    client = await RawClient.connect("127.0.0.1", farm.proxy.port)
    try:
        sub = await client.call("mining.subscribe", ["late-rig/1.0"])
        assert sub["error"] is None and sub["result"][2] == 4
        auth = await client.call("mining.authorize", ["late.rig", "x"])
        assert auth["result"] is True
        notify = await client.notification("mining.notify")
        assert tag in bytes.fromhex(notify["params"][2])
    finally:
        client.close()


@pytest.mark.parametrize("name", list(CASES))
async def test_pool_fault(fault_farm, certs, name):
    case = CASES[name]
    started = time.monotonic()
    farm = fault_farm
    ctx = await _build(farm, case, certs)
    fleet = farm.fleet
    assert fleet is not None
    t_fault = time.monotonic()
    await case.inject(ctx)
    if case.failover:
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"backup") == RIGS, 10,
                               "every rig on the backup's job")
        failover_ms = (max(t for t in fleet.first_notify_after(t_fault, b"backup")) - t_fault) * 1000
        base = ctx.view("backup")["accepted"]
        await wait_until(lambda: ctx.view("backup")["accepted"] >= base + 2 * RIGS, 10,
                         what="mining on the backup")
    else:
        failover_ms = None
        base = ctx.view()["accepted"]
        await wait_until(lambda: ctx.view()["accepted"] >= base + 2 * RIGS, 10,
                         what="mining on through the fault")
        assert fleet.rigs_with_job_containing(b"primary") == RIGS
        assert farm.active_pools() == ["primary"]
    if case.error:
        await wait_until(lambda: re.search(case.error, ctx.view()["last_error"]) is not None, 5,
                         what=f"primary's last_error to match {case.error!r}")
    if case.check is not None:
        await case.check(ctx)
    await quiesce(farm)
    exact = ("backup",) if case.failover else ("primary", "backup")
    totals = check_accounting(farm, exact_pools=exact)
    assert totals["rig_submits"] >= 2 * RIGS and totals["rig_disconnects"] == 0
    if case.failover:  # shares for the primary that the fault cut off were counted, by reason
        primary = totals["pools"]["primary"]
        assert primary["state"] != "healthy" or primary["last_error"]
    await _still_serving(farm, b"backup" if case.failover else b"primary")
    assert fleet.connected == RIGS and fleet.disconnects == 0
    record("pool_faults", name, totals, time.monotonic() - started,
           failover_ms=None if failover_ms is None else round(failover_ms, 1),
           primary_last_error=ctx.view()["last_error"])
