"""The order ledger: sqlite3 in WAL mode, written before and after every provider call.

Why: a paid order must survive any crash of the proxy.  Before a call the controller writes
an *intent* (kind, parameters, the idempotency key it will send); after the call it writes
the *result*.  On start, ``BackfillController.reconcile`` compares the intents still pending
and the orders the ledger believes open with what the provider says is active, and adopts,
cancels or closes each, so a kill at any instant never orphans or duplicates an order.

Money is stored as decimal TEXT, never REAL.  Writes are tiny and rare (a few per control
period at most), so they run on the event loop with ``synchronous=FULL``: an intent is on
disk before the request that it describes leaves the process.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .provider import OrderStatus

__all__ = ["Ledger", "utc_day"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    id TEXT PRIMARY KEY,        -- the idempotency key sent with the call
    kind TEXT NOT NULL,         -- place | resize | refill | cancel
    order_id TEXT,              -- known up front except for place
    params TEXT NOT NULL,       -- JSON, money as strings
    created REAL NOT NULL,
    state TEXT NOT NULL,        -- pending | done | failed | reconciled
    result TEXT,
    finished REAL
);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    intent_id TEXT,
    state TEXT NOT NULL,        -- pending | active | closed
    raw_state TEXT NOT NULL,
    limit_hs REAL NOT NULL,
    price TEXT NOT NULL,
    amount TEXT NOT NULL,
    spent TEXT NOT NULL,
    remaining TEXT NOT NULL,
    delivered_hs REAL NOT NULL,
    pool_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    closed REAL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS spend (  -- per UTC day, what each order spent that day
    day TEXT NOT NULL,
    order_id TEXT NOT NULL,
    baseline TEXT NOT NULL,     -- the order's total spent when the day began (or first seen)
    last TEXT NOT NULL,         -- its total spent at the last observation that day
    PRIMARY KEY (day, order_id)
);
"""


def utc_day(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d")


def _money(value: Any) -> str:
    return str(value) if isinstance(value, Decimal) else value


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- intents ----------------------------------------------------------------------------

    def begin(
        self,
        key: str,
        kind: str,
        params: dict[str, Any],
        order_id: str | None = None,
        wall: float | None = None,
    ) -> str:
        """Write an intent before the provider call it describes."""
        with self.db:
            self.db.execute(
                "INSERT INTO intents (id, kind, order_id, params, created, state) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                (
                    key,
                    kind,
                    order_id,
                    json.dumps({k: _money(v) for k, v in params.items()}),
                    wall if wall is not None else time.time(),
                ),
            )
        return key

    def finish(
        self,
        key: str,
        state: str,
        result: dict[str, Any] | str,
        order_id: str | None = None,
        wall: float | None = None,
    ) -> None:
        """Write the outcome of an intent (done, failed, reconciled)."""
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        with self.db:
            self.db.execute(
                "UPDATE intents SET state=?, result=?, finished=?, order_id=COALESCE(?, order_id) WHERE id=?",
                (state, text, wall if wall is not None else time.time(), order_id, key),
            )

    def pending_intents(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM intents WHERE state='pending' ORDER BY created").fetchall()
        return [{**dict(r), "params": json.loads(r["params"])} for r in rows]

    def intents(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM intents ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "params": json.loads(r["params"])} for r in rows]

    # --- orders -----------------------------------------------------------------------------

    def record_order(
        self,
        status: OrderStatus,
        *,
        pool: str = "",
        intent_id: str | None = None,
        wall: float | None = None,
        note: str | None = None,
    ) -> None:
        """Upsert the provider's view of an order and account what it spent today."""
        wall = wall if wall is not None else time.time()
        closed = wall if status.state == "closed" else None
        with self.db:
            self.db.execute(
                "INSERT INTO orders (id, intent_id, state, raw_state, limit_hs, price, amount, spent, "
                "remaining, delivered_hs, pool_id, pool, created, updated, closed, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, raw_state=excluded.raw_state, "
                "limit_hs=excluded.limit_hs, price=excluded.price, amount=excluded.amount, "
                "spent=excluded.spent, remaining=excluded.remaining, delivered_hs=excluded.delivered_hs, "
                "updated=excluded.updated, closed=COALESCE(orders.closed, excluded.closed), "
                "intent_id=COALESCE(orders.intent_id, excluded.intent_id), "
                "pool=CASE WHEN excluded.pool != '' THEN excluded.pool ELSE orders.pool END, "
                "note=COALESCE(excluded.note, orders.note)",
                (
                    status.id,
                    intent_id,
                    status.state,
                    status.raw_state,
                    status.limit_hs,
                    str(status.price),
                    str(status.amount),
                    str(status.spent),
                    str(status.remaining),
                    status.delivered_hs,
                    status.pool_id,
                    pool,
                    status.created or wall,
                    wall,
                    closed,
                    note,
                ),
            )
            self._account(status, wall)

    def _account(self, status: OrderStatus, wall: float) -> None:
        day = utc_day(wall)
        row = self.db.execute(
            "SELECT baseline FROM spend WHERE day=? AND order_id=?", (day, status.id)
        ).fetchone()
        if row is None:
            before = self.db.execute(
                "SELECT last FROM spend WHERE order_id=? AND day<? ORDER BY day DESC LIMIT 1",
                (status.id, day),
            ).fetchone()
            if before is not None:
                baseline = before["last"]
            elif utc_day(status.created or wall) == day:
                baseline = "0"
            else:
                baseline = str(status.spent)  # first seen today, created earlier: today's spend starts now
            self.db.execute(
                "INSERT INTO spend (day, order_id, baseline, last) VALUES (?, ?, ?, ?)",
                (day, status.id, baseline, str(status.spent)),
            )
        else:
            self.db.execute(
                "UPDATE spend SET last=? WHERE day=? AND order_id=?", (str(status.spent), day, status.id)
            )

    def close_order(self, order_id: str, note: str, wall: float | None = None) -> None:
        """Mark an order closed without a fresh provider status (it is gone from the provider)."""
        with self.db:
            self.db.execute(
                "UPDATE orders SET state='closed', closed=COALESCE(closed, ?), note=? WHERE id=?",
                (wall if wall is not None else time.time(), note, order_id),
            )

    def order(self, order_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
        return dict(row) if row else None

    def open_orders(self) -> list[dict[str, Any]]:
        return [
            dict(r) for r in self.db.execute("SELECT * FROM orders WHERE state != 'closed' ORDER BY created")
        ]

    def orders(self, limit: int = 50) -> list[dict[str, Any]]:
        return [
            dict(r) for r in self.db.execute("SELECT * FROM orders ORDER BY created DESC LIMIT ?", (limit,))
        ]

    # --- money ------------------------------------------------------------------------------

    def spent_today(self, wall: float | None = None) -> Decimal:
        day = utc_day(wall if wall is not None else time.time())
        rows = self.db.execute("SELECT baseline, last FROM spend WHERE day=?", (day,)).fetchall()
        return sum((max(Decimal(r["last"]) - Decimal(r["baseline"]), Decimal(0)) for r in rows), Decimal(0))

    def spent_total(self) -> Decimal:
        return sum((Decimal(r["spent"]) for r in self.db.execute("SELECT spent FROM orders")), Decimal(0))

    def committed(self) -> Decimal:
        """Escrow still unspent in open orders: money that may yet be spent today."""
        return sum(
            (
                Decimal(r["remaining"])
                for r in self.db.execute("SELECT remaining FROM orders WHERE state != 'closed'")
            ),
            Decimal(0),
        )
