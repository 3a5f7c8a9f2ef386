"""Crash safety: a controller killed between "intent written" and "provider answered"."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

from proxy.sim import wait_until

from .conftest import RIG_HS

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, sys
    from proxy.rental.controller import BackfillController
    from proxy.rental.local import destination_for
    from proxy.rental.nicehash import NiceHashProvider
    from tests.rental.conftest import RIG_HS, rental_config

    async def main():
        url, pool_port, ledger = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        cfg = rental_config(pool_port, ledger)
        dest, _ = destination_for(cfg, 0)
        async def farm():
            return 5 * RIG_HS
        ctl = BackfillController(cfg.rental, NiceHashProvider(url, "sim-key", "sim-secret", "sim-org"), farm,
                                 ledger, dest, quote_every_s=0.2)
        await ctl.start()
        await asyncio.sleep(60)

    asyncio.run(main())
""")


def pending_place_intents(ledger: str) -> int:
    db = sqlite3.connect(ledger)
    try:
        return db.execute("SELECT count(*) FROM intents WHERE kind='place' AND state='pending'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


async def test_kill_after_the_order_was_created_but_before_the_answer(bench):
    market = bench.market
    market.hold_creates = asyncio.Event()  # the order is created; its answer is held
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        market.url,
        str(bench.pool.port),
        bench.ledger,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(market.created_event.wait(), 15)
        assert pending_place_intents(bench.ledger) == 1  # intent on disk, no result
        proc.send_signal(signal.SIGKILL)  # a crash: nothing runs after this
        await asyncio.wait_for(proc.wait(), 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    market.hold_creates.set()
    assert len(market.alive_orders()) == 1 and market.create_calls == 1
    (paid,) = market.alive_orders()

    ctl = bench.controller()
    bench.farm.hs = 5 * RIG_HS  # still short: a naive restart would place a second order
    await ctl.start()
    assert ctl.order is not None and ctl.order.id == paid.id
    assert [r["id"] for r in ctl.ledger.open_orders()] == [paid.id]
    (intent,) = [i for i in ctl.ledger.intents() if i["kind"] == "place"]
    assert intent["state"] == "reconciled" and intent["order_id"] == paid.id
    assert ctl.ledger.order(paid.id)["intent_id"] == intent["id"]
    await wait_until(
        lambda: paid.state == "ACTIVE" and ctl.order is not None and ctl.order.state == "active",
        5,
        what="the adopted order running",
    )
    # short of the target all along: a restart that had not adopted the order would place
    # a second one within these periods
    await bench.control_periods(bench.trigger_periods())
    assert market.create_calls == 1 and len(market.alive_orders()) == 1
    assert any(e["kind"] == "rental_reconcile" and "answer was lost" in e["reason"] for e in bench.events)


async def test_kill_before_the_request_reached_the_provider(bench):
    provider = bench.provider()
    reached = asyncio.Event()

    async def never_answers(**kw):
        reached.set()
        await asyncio.Event().wait()

    provider.place_order = never_answers
    first = bench.controller(provider)
    bench.farm.hs = 5 * RIG_HS
    await first.start()
    await asyncio.wait_for(reached.wait(), 5)
    assert pending_place_intents(bench.ledger) == 1
    first._task.cancel()  # the process dies here: no result is written
    first.ledger.close()
    first.ledger = None
    bench.controllers.remove(first)
    assert not bench.market.orders

    ctl = bench.controller()
    await ctl.start()
    (intent,) = [i for i in ctl.ledger.intents() if i["kind"] == "place"]
    assert intent["state"] == "reconciled" and intent["order_id"] is None
    await wait_until(lambda: ctl.order is not None, 5, what="the order placed after the restart")
    await bench.control_periods(bench.trigger_periods())
    assert bench.market.create_calls == 1 and len(bench.market.alive_orders()) == 1
    assert [r["id"] for r in ctl.ledger.open_orders()] == [ctl.order.id]
