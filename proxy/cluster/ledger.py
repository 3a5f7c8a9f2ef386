"""The rental ledger in etcd, every write fenced by the leader's lease.

The backfill controller's ledger interface stays the one of ``proxy.rental.ledger.Ledger``
(synchronous reads and writes): ``EtcdLedger`` *is* that ledger, on an in-memory SQLite
database loaded from etcd when this instance becomes the rental leader, so the controller's
code and its SQL accounting (spend per UTC day, committed escrow) are unchanged.  Every
write also queues the rows it touched (intent, order, that order's spend rows) as JSON under
``/<farm>/ledger/``, and ``flush()`` writes the queue to etcd in ONE transaction that
succeeds only if the leader key still carries this instance's election (its create
revision): a leader whose lease expired, or that another instance replaced, writes nothing.

Why the provider is wrapped too (``FencedProvider``): the ledger's rule is "the intent is
durable before the call it describes".  Before any call that spends or changes money
(place, resize, refill, cancel) the wrapper checks the lease locally (a leader frozen past
its TTL knows its lease is gone without asking anyone) and flushes the ledger through the
fence; if either fails the call is not sent and the controller sees a refusal.  So a new
leader continues from the old one's intents (reconcile adopts what the marketplace shows),
and a stalled old leader that wakes up can place nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ..rental.ledger import Ledger
from ..rental.provider import OrderStatus, ProviderError
from .etcd import EtcdClient, EtcdError, compare_create, put_op

log = logging.getLogger("proxy.cluster.ledger")

TABLES = ("intents", "orders", "spend")
TXN_OPS = 100  # below etcd's default --max-txn-ops (128)


class Fenced(Exception):
    """The leader key is no longer this instance's: the write was refused by etcd."""


class EtcdLedger(Ledger):
    """``Ledger`` whose rows live in etcd (see the module docstring)."""

    def __init__(self, etcd: EtcdClient, prefix: str, leader_key: str, election: Callable[[], int]) -> None:
        super().__init__(":memory:")
        self.etcd = etcd
        self.prefix = prefix.rstrip("/") + "/"
        self.leader_key = leader_key
        self.election = election  # the create revision of our leader key (0: not leading)
        self._queue: dict[str, bytes] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.fenced = False
        self.flushes = 0

    async def load(self) -> int:
        """Read every row from etcd into the cache; returns how many."""
        kvs, _ = await self.etcd.range(self.prefix, prefix=True)
        with self.db:
            for kv in kvs:
                table = kv.key[len(self.prefix):].split("/", 1)[0]
                if table not in TABLES:
                    continue
                row = json.loads(kv.value)
                columns = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                self.db.execute(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608
                                tuple(row.values()))
        return len(kvs)

    # --- write-through ----------------------------------------------------------------------

    def begin(self, key: str, kind: str, params: dict[str, Any], order_id: str | None = None,
              wall: float | None = None) -> str:
        super().begin(key, kind, params, order_id, wall)
        self._queue_intent(key)
        return key

    def finish(self, key: str, state: str, result: dict[str, Any] | str, order_id: str | None = None,
               wall: float | None = None) -> None:
        super().finish(key, state, result, order_id, wall)
        self._queue_intent(key)

    def record_order(self, status: OrderStatus, *, pool: str = "", intent_id: str | None = None,
                     wall: float | None = None, note: str | None = None) -> None:
        super().record_order(status, pool=pool, intent_id=intent_id, wall=wall, note=note)
        self._queue_order(status.id)

    def close_order(self, order_id: str, note: str, wall: float | None = None) -> None:
        super().close_order(order_id, note, wall)
        self._queue_order(order_id)

    def _queue_intent(self, key: str) -> None:
        row = self.db.execute("SELECT * FROM intents WHERE id=?", (key,)).fetchone()
        if row is not None:
            self._queue_row(f"intents/{key}", dict(row))

    def _queue_order(self, order_id: str) -> None:
        row = self.db.execute("SELECT * FROM orders WHERE id=?", (order_id,)).fetchone()
        if row is not None:
            self._queue_row(f"orders/{order_id}", dict(row))
        for spend in self.db.execute("SELECT * FROM spend WHERE order_id=?", (order_id,)).fetchall():
            self._queue_row(f"spend/{spend['day']}/{order_id}", dict(spend))

    def _queue_row(self, path: str, row: dict[str, Any]) -> None:
        self._queue[self.prefix + path] = json.dumps(row, separators=(",", ":")).encode()
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._background_flush())
            except RuntimeError:  # no loop (a synchronous caller): the next flush() writes it
                self._task = None

    async def _background_flush(self) -> None:
        try:
            await self.flush()
        except (Fenced, EtcdError) as exc:
            log.warning("ledger write to etcd not done: %s", exc)

    # --- the fence --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write every queued row in one transaction fenced by the leader key.

        Raises ``Fenced`` (the rows are dropped: they were never ours to write) or
        ``EtcdError`` / ``EtcdUnavailable`` (the rows stay queued for the next flush)."""
        async with self._lock:
            if self.fenced:
                self._queue.clear()
                raise Fenced("this instance lost the rental leadership; ledger writes refused")
            if not self._queue:
                return
            batch, self._queue = self._queue, {}
            election = self.election()
            if not election:
                self.fenced = True
                raise Fenced("this instance does not lead the rental controller")
            items = list(batch.items())
            for start in range(0, len(items), TXN_OPS):  # etcd caps the operations of one txn
                chunk = items[start:start + TXN_OPS]
                try:
                    ok, _, _ = await self.etcd.txn([compare_create(self.leader_key, election)],
                                                   [put_op(k, v) for k, v in chunk])
                except EtcdError:
                    self._queue = {**dict(items[start:]), **self._queue}  # written next time
                    raise
                if not ok:
                    self.fenced = True
                    self._queue.clear()
                    raise Fenced(f"the leader key {self.leader_key} is no longer held by this "
                                 f"instance's election (revision {election}); ledger write refused by etcd")
            self.flushes += 1

    def pending_writes(self) -> int:
        return len(self._queue)


class FencedProvider:
    """A marketplace client that sends money-moving calls only while this instance leads
    and only after the ledger's intent is durable in etcd (see the module docstring)."""

    def __init__(self, provider: Any, ledger: EtcdLedger, leading: Callable[[], str | None]) -> None:
        self.inner = provider
        self.ledger = ledger
        self.leading = leading  # None while this instance leads with a live lease, else why not
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _guard(self, what: str) -> None:
        why = self.leading()
        if why is None:
            try:
                await self.ledger.flush()
                return
            except (Fenced, EtcdError) as exc:
                why = str(exc)
        self.refused += 1
        log.warning("rental: %s not sent: %s", what, why)
        raise ProviderError(f"{what} not sent: {why}", retryable=False)

    async def place_order(self, **kwargs: Any) -> OrderStatus:
        await self._guard("place order")
        return await self.inner.place_order(**kwargs)

    async def update_order(self, order_id: str, **kwargs: Any) -> OrderStatus:
        await self._guard(f"resize of {order_id}")
        return await self.inner.update_order(order_id, **kwargs)

    async def refill(self, order_id: str, amount: Any, idempotency_key: str) -> OrderStatus:
        await self._guard(f"refill of {order_id}")
        return await self.inner.refill(order_id, amount, idempotency_key)

    async def cancel(self, order_id: str) -> OrderStatus:
        await self._guard(f"cancel of {order_id}")
        return await self.inner.cancel(order_id)
