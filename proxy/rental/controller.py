"""The backfill controller: rent hashpower when the farm under-delivers, stop when it recovers.

Two layers, so the decisions can be tested on an injected clock without sockets or sleeps:

* ``BackfillPolicy`` is a pure state machine: ``decide(now, delivered_hs, order, budget_left=,
  quote=) -> Action``.  No I/O, no clock of its own.
* ``BackfillController`` is the asyncio driver: it reads the delivered hashrate, refreshes the
  order and the market quote from the provider, asks the policy, and carries the action out
  with the ledger's intent-before / result-after discipline.

Reusing the controller (e.g. a farm-wide control plane)::

    controller = BackfillController(
        config,                      # proxy.config.RentalSection (target, trigger, price, budget ...)
        provider,                    # proxy.rental.provider.Provider (NiceHashProvider, ...)
        delivered_hashrate,          # async () -> float | None: H/s delivered to the pool, None = unknown
        ledger_path,                 # sqlite3 file (WAL); one per controller
        ledger=None,                 # or a Ledger-like store of your own (proxy.cluster: etcd)
        destination,                 # proxy.rental.provider.Destination: where rented rigs are pointed
        events=sink,                 # sink(kind, reason, **fields): every decision, with its reason
        clock=time.monotonic,        # seconds, for trigger/recover/cooldown timing
        wall=time.time,              # seconds since the epoch, for the daily budget (UTC days)
        rented_in_source=False,      # True when rented rigs come through the measured source
    )
    await controller.start()         # registers the pool, reconciles the ledger, runs every interval_s
    controller.view()                # the /api/v1/rentals document
    await controller.stop()          # stops deciding; open orders stay (the next start adopts them)

Semantics of "delivered": the target is what the operator wants delivered *to the pool*.
``delivered_hashrate`` measures what the caller can see.  When rented hashpower is pointed
straight at a pool the source cannot see it, so the controller adds the order's delivered
hashrate as the provider reports it (``rented_in_source=False``); when it is pointed at the
proxy itself the rented rigs are already in the measurement (``rented_in_source=True``) and
nothing is added.  Either way the farm's own hashrate is ``delivered - rented``, and that is
what decides the order's size (``target - own``) and whether the rigs have recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from ..core.events import emit_safely
from .ledger import Ledger
from .policy import (
    Action,
    BackfillPolicy,
    HashpriceReading,
    PolicyConfig,
    WindowAverage,
    decimal_text,
    price_cap,
)
from .provider import CooldownError, Destination, OrderStatus, Provider, ProviderError, Quote
from .units import format_btc, price_decimals

log = logging.getLogger("proxy.rental")

EventSink = Callable[..., None]

__all__ = ["Action", "BackfillController", "BackfillPolicy", "HashpriceReading", "PolicyConfig", "price_cap"]


class BackfillController:
    """The asyncio driver around ``BackfillPolicy``; see the module docstring."""

    def __init__(
        self,
        config: Any,
        provider: Provider,
        delivered_hashrate: Callable[[], Awaitable[float | None]],
        ledger_path: str,
        destination: Destination,
        *,
        events: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rented_in_source: bool = False,
        quote_every_s: float = 60.0,
        own_provider: bool = True,
        hashprice: Callable[[], HashpriceReading] | None = None,
        ledger: Ledger | None = None,
        power: Any = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.delivered_hashrate = delivered_hashrate
        self.ledger_path = ledger_path
        self.destination = destination
        self.events = events
        self.clock = clock
        self.wall = wall
        self.rented_in_source = rented_in_source
        self.quote_every_s = quote_every_s
        self.own_provider = own_provider
        self.read_hashprice = hashprice
        self.hashprice: HashpriceReading | None = None
        self.policy = BackfillPolicy(PolicyConfig.from_rental(config))
        self.ledger: Ledger | None = None
        self._given_ledger = ledger  # another store with the Ledger interface (the farm's etcd)
        self.pool_id: str | None = None
        self.order: OrderStatus | None = None
        self.quote: Quote | None = None
        self._quote_at = -1e18
        self.reconciled = False
        self.state = "starting"
        self.last_action: Action | None = None
        self.last_decision: dict[str, Any] | None = None
        self.measured_hs: float | None = None
        self.delivered_hs: float | None = None
        self._last_code: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._rented = WindowAverage(config.window_s)
        # power-aware backfill (proxy.power.monitor.PowerMonitor): .input() -> PowerInput,
        # .order_delivered(seconds) teaches it how long orders take to deliver
        self.power = power
        self._cover = WindowAverage(config.window_s)
        self._placed_at: float | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, run: bool = True) -> None:
        """Open the ledger, register the pool and reconcile (retried in the loop if the
        marketplace is unreachable now); with ``run`` decide every ``interval_s``."""
        self.ledger = self._given_ledger or Ledger(self.ledger_path)
        await self._prepare()
        if run:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rental-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.own_provider:
            with contextlib.suppress(Exception):
                await self.provider.close()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        self.state = "stopped"

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rental controller step failed")
            await asyncio.sleep(self.config.interval_s)

    async def _prepare(self) -> bool:
        if self.reconciled:
            return True
        try:
            if self.pool_id is None:
                self.pool_id = await self.provider.ensure_pool(self.destination)
            await self.reconcile()
        except Exception as exc:  # an unreachable or odd marketplace never stops the proxy
            self.state = "provider_unreachable"
            self._emit("rental_error", f"cannot reach the marketplace to reconcile: {exc}", code="reconcile")
            return False
        return True

    # --- events -----------------------------------------------------------------------------

    def _emit(self, kind: str, reason: str, **fields: Any) -> None:
        emit_safely(self.events, log, kind, reason, **fields)

    # --- money ------------------------------------------------------------------------------

    def budget_left(self) -> Decimal:
        assert self.ledger is not None
        wall = self.wall()
        return self.config.daily_budget - self.ledger.spent_today(wall) - self.ledger.committed()

    # --- reconcile --------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the ledger and the provider agree: adopt one order, cancel extras, close the rest."""
        ledger = self.ledger
        assert ledger is not None
        active = await self.provider.active_orders()
        known_open = {r["id"]: r for r in ledger.open_orders()}
        ours = [o for o in active if o.pool_id == self.pool_id or ledger.order(o.id) is not None]
        pending = ledger.pending_intents()
        pending_place = [i for i in pending if i["kind"] == "place"]
        # keep an order the ledger knows (newest first), else the newest unknown one
        ours.sort(key=lambda o: (ledger.order(o.id) is not None, o.created), reverse=True)
        keep: OrderStatus | None = None
        wall = self.wall()
        for o in ours:
            if not o.alive:
                continue
            known = ledger.order(o.id) is not None
            if keep is None:
                keep = o
                if known:
                    how = "known to the ledger"
                    intent = None
                elif pending_place:
                    how = "created by a call whose answer was lost (intent written, no result)"
                    intent = pending_place[-1]["id"]
                else:
                    how = "not in the ledger but pointed at our pool"
                    intent = None
                ledger.record_order(
                    o,
                    pool=self.destination.name,
                    intent_id=intent,
                    wall=wall,
                    note=None if known else "adopted",
                )
                self._emit(
                    "rental_reconcile",
                    f"adopted order {o.id} ({o.raw_state}): {how}",
                    order_id=o.id,
                    action="adopt",
                )
                continue
            await self._cancel(o.id, f"duplicate of order {keep.id} found on reconcile", code="duplicate")
        adopted_intent = ledger.order(keep.id).get("intent_id") if keep is not None else None
        for intent in pending:
            if intent["id"] == adopted_intent and keep is not None:
                ledger.finish(
                    intent["id"],
                    "reconciled",
                    {"order_id": keep.id, "note": "adopted on start"},
                    order_id=keep.id,
                    wall=wall,
                )
            elif intent["kind"] == "place":
                ledger.finish(
                    intent["id"],
                    "reconciled",
                    {
                        "note": "no order of ours from this call is active "
                        "at the provider: it never took effect, or its order was a duplicate"
                    },
                    wall=wall,
                )
            else:
                ledger.finish(
                    intent["id"], "reconciled", {"note": "outcome read back from the provider"}, wall=wall
                )
        active_ids = {o.id for o in ours if o.alive}
        for order_id in known_open:
            if order_id in active_ids:
                continue
            try:
                st = await self.provider.status(order_id)
            except ProviderError as exc:
                ledger.close_order(order_id, f"not active at the provider on reconcile ({exc})", wall=wall)
                self._emit(
                    "rental_reconcile",
                    f"closed order {order_id}: gone from the provider",
                    order_id=order_id,
                    action="close",
                )
                continue
            if st.alive and keep is None:
                keep = st
                ledger.record_order(st, wall=wall)
                self._emit(
                    "rental_reconcile",
                    f"adopted order {st.id} ({st.raw_state})",
                    order_id=st.id,
                    action="adopt",
                )
            elif st.alive:
                await self._cancel(
                    st.id, f"duplicate of order {keep.id} found on reconcile", code="duplicate"
                )
            else:
                ledger.record_order(st, wall=wall, note="closed at the provider")
                self._emit(
                    "rental_reconcile",
                    f"closed order {st.id}: {st.raw_state} at the provider",
                    order_id=st.id,
                    action="close",
                )
        self.order = keep
        if keep is not None and keep.created:
            self.policy.note_order_started(self.clock() - max(0.0, wall - keep.created))
        self.reconciled = True
        self.state = "renting" if keep is not None else "idle"

    # --- one decision -----------------------------------------------------------------------

    async def step(self) -> Action | None:
        """Measure, refresh, decide, act: one control period."""
        async with self._lock:
            return await self._step()

    async def _step(self) -> Action | None:
        if self.ledger is None:
            return None
        if not await self._prepare():
            return None
        now = self.clock()
        self.measured_hs = await self.delivered_hashrate()
        if self.order is not None:
            try:
                st = await self.provider.status(self.order.id)
                self.ledger.record_order(st, wall=self.wall())
                self.order = st
                self._note_delivery(now, st)
                if not st.alive:
                    self._emit(
                        "rental_order_closed",
                        f"order {st.id} is {st.raw_state} at the provider (spent {format_btc(st.spent)} BTC)",
                        order_id=st.id,
                        spent_btc=f"{st.spent:f}",
                    )
                    self.order = None
            except ProviderError as exc:
                self._emit("rental_error", f"order status failed: {exc}", code="status")
        if self.quote is None or now - self._quote_at >= self.quote_every_s:
            try:
                self.quote = await self.provider.quote()
                self._quote_at = now
            except ProviderError as exc:
                self._emit("rental_error", f"market quote failed: {exc}", code="quote")
        rented = self.order.delivered_hs if self.order is not None else 0.0
        self._rented.add(now, rented)
        rented_hs: float | None = None
        if self.measured_hs is None:
            self.delivered_hs = None
        elif self.rented_in_source:
            # the rented rigs are inside the windowed measurement: subtract them averaged alike
            self.delivered_hs = self.measured_hs
            rented_hs = min(self._rented.average(now), self.measured_hs)
        else:
            self.delivered_hs = self.measured_hs + rented
        budget_left = self.budget_left()
        self.hashprice = self._hashprice()
        action = self.policy.decide(
            now, self.delivered_hs, self.order, budget_left=budget_left, quote=self.quote,
            rented_hs=rented_hs, hashprice=self.hashprice, power=self._power_input(now),
        )
        self.last_action = action
        self.last_decision = {
            "time": round(self.wall(), 3),
            **action.view(),
            "budget_left_btc": str(budget_left),
        }
        if action.kind in ("none", "wait"):
            if action.code != self._last_code:
                self._emit(
                    "rental_decision",
                    action.reason,
                    action=action.kind,
                    code=action.code,
                    delivered_hs=self.delivered_hs,
                    target_hs=self.config.target_hs,
                    **action.prices(),
                )
            self._last_code = action.code
            self.state = (
                "renting" if self.order is not None else ("deficit" if action.kind == "wait" else "idle")
            )
            return action
        self._last_code = action.code
        await self._execute(action, budget_left)
        self.state = "renting" if self.order is not None else "idle"
        return action

    def _power_input(self, now: float) -> Any:
        """The power planner's input; while power is not back, its at-risk hashrate is held
        for one window after the rigs vanish (the delivered measurement loses them over the
        same window, so the order neither shrinks nor grows in between)."""
        if self.power is None:
            return None
        try:
            current = self.power.input()
        except Exception:  # power data is advisory: never stop the controller
            log.exception("reading the power plan failed")
            return None
        self._cover.add(now, current.cover_hs)
        if not current.hold:  # power is back (or nothing planned): nothing is held over
            return current
        return dataclasses.replace(current, cover_hs=max(current.cover_hs, self._cover.average(now)))

    def _note_delivery(self, now: float, st: OrderStatus) -> None:
        """Placed -> delivering 90% of its limit: how long orders take (the power lead)."""
        if self._placed_at is None or not st.alive or st.delivered_hs < 0.9 * st.limit_hs:
            return
        seconds, self._placed_at = now - self._placed_at, None
        if self.power is not None:
            self.power.order_delivered(seconds)

    def _hashprice(self) -> HashpriceReading:
        if self.read_hashprice is None:
            return HashpriceReading(None, "no hashprice source")
        try:
            return self.read_hashprice()
        except Exception as exc:  # the proxy's figures are advisory: never stop the controller
            log.exception("reading the hashprice failed")
            return HashpriceReading(None, f"cannot read the hashprice: {exc}")

    def price_cap(self) -> Decimal | None:
        """The most an order may pay now (fixed, or the hashprice plus the premium)."""
        return price_cap(self.policy.cfg, self.hashprice)[0]

    async def _execute(self, action: Action, budget_left: Decimal) -> None:
        if action.kind == "place":
            await self._place(action, budget_left)
        elif action.kind == "resize" and self.order is not None:
            await self._resize(self.order, action)
        elif action.kind == "refill" and self.order is not None:
            await self._refill(self.order, action, budget_left)
        elif (action.kind == "cancel" and self.order is not None
              and await self._cancel(self.order.id, action.reason, code=action.code)):
            self.order = None

    def _guard(self, price: Decimal | None, amount: Decimal | None, budget_left: Decimal) -> str | None:
        """Last line of defence, independent of the policy: max price and budget."""
        cap, cap_text = price_cap(self.policy.cfg, self.hashprice)
        if price is not None and (cap is None or price > cap):
            return f"price {price} above {cap_text}" if cap is not None else f"price {price}: {cap_text}"
        if amount is not None and (amount <= 0 or amount > budget_left):
            return f"amount {amount} outside the budget left {budget_left}"
        return None

    async def _place(self, action: Action, budget_left: Decimal) -> None:
        assert self.ledger is not None and action.price is not None and action.amount is not None
        if self.order is not None:
            return  # never two orders where one is meant
        refused = self._guard(action.price, action.amount, budget_left)
        if refused:
            self._emit("rental_refused", f"place refused: {refused}", code="guard")
            return
        key = str(uuid.uuid4())
        self.ledger.begin(
            key,
            "place",
            {
                "limit_hs": action.limit_hs,
                "price": action.price,
                "amount": action.amount,
                "pool_id": self.pool_id,
            },
            wall=self.wall(),
        )
        try:
            st = await self.provider.place_order(
                limit_hs=action.limit_hs,
                pool_id=self.pool_id or "",
                price=action.price,
                amount=action.amount,
                idempotency_key=key,
            )
        except ProviderError as exc:
            self.policy.note_failure(self.clock())
            if exc.retryable:
                # the order may exist: leave the intent pending and read the truth back
                self._emit("rental_error", f"place order: no answer ({exc}); reconciling", code="place")
                self.reconciled = False
                await self._prepare()
            else:
                self.ledger.finish(key, "failed", {"error": str(exc)}, wall=self.wall())
                self._emit("rental_error", f"place order refused: {exc}", code="place")
            return
        self.ledger.record_order(st, pool=self.destination.name, intent_id=key, wall=self.wall())
        self.ledger.finish(
            key, "done", {"order_id": st.id, "state": st.raw_state}, order_id=st.id, wall=self.wall()
        )
        self.order = st
        self.policy.note_order_started(self.clock())
        self._placed_at = self.clock()
        self._emit(
            "rental_order_placed",
            action.reason,
            order_id=st.id,
            code=action.code,
            limit_hs=action.limit_hs,
            **{k: v for k, v in action.fields.items() if k == "at_risk_hs"},
            price=str(action.price),
            amount_btc=str(action.amount),
            **action.prices(),
        )

    async def _resize(self, order: OrderStatus, action: Action) -> None:
        assert self.ledger is not None and action.price is not None
        refused = self._guard(action.price, None, Decimal(0))
        if refused:
            self._emit("rental_refused", f"resize refused: {refused}", code="guard")
            return
        key = str(uuid.uuid4())
        self.ledger.begin(
            key,
            "resize",
            {"limit_hs": action.limit_hs, "price": action.price},
            order_id=order.id,
            wall=self.wall(),
        )
        try:
            st = await self.provider.update_order(order.id, price=action.price, limit_hs=action.limit_hs)
        except CooldownError as exc:
            self.policy.note_cooldown(self.clock(), exc.retry_after_s)
            self.ledger.finish(
                key, "failed", {"cooldown_s": exc.retry_after_s, "error": str(exc)}, wall=self.wall()
            )
            self._emit(
                "rental_cooldown",
                f"resize refused by the marketplace: retry in {exc.retry_after_s:g}s",
                order_id=order.id,
                retry_after_s=exc.retry_after_s,
            )
            return
        except ProviderError as exc:
            self.policy.note_failure(self.clock())
            self.ledger.finish(key, "failed", {"error": str(exc)}, wall=self.wall())
            self._emit("rental_error", f"resize failed: {exc}", code="resize", order_id=order.id)
            return
        self.ledger.record_order(st, wall=self.wall())
        self.ledger.finish(key, "done", {"limit_hs": st.limit_hs, "price": str(st.price)}, wall=self.wall())
        self.order = st
        self._emit(
            "rental_order_resized", action.reason, order_id=st.id, limit_hs=st.limit_hs, price=str(st.price),
            **action.prices(),
        )

    async def _refill(self, order: OrderStatus, action: Action, budget_left: Decimal) -> None:
        assert self.ledger is not None and action.amount is not None
        refused = self._guard(None, action.amount, budget_left)
        if refused:
            self._emit("rental_refused", f"refill refused: {refused}", code="guard")
            return
        key = str(uuid.uuid4())
        self.ledger.begin(key, "refill", {"amount": action.amount}, order_id=order.id, wall=self.wall())
        try:
            st = await self.provider.refill(order.id, action.amount, key)
        except ProviderError as exc:
            self.policy.note_failure(self.clock())
            self.ledger.finish(key, "failed", {"error": str(exc)}, wall=self.wall())
            self._emit("rental_error", f"refill failed: {exc}", code="refill", order_id=order.id)
            return
        self.ledger.record_order(st, wall=self.wall())
        self.ledger.finish(key, "done", {"amount": str(st.amount)}, wall=self.wall())
        self.order = st
        self._emit("rental_order_refilled", action.reason, order_id=st.id, amount_btc=str(action.amount))

    async def _cancel(self, order_id: str, reason: str, *, code: str) -> bool:
        assert self.ledger is not None
        key = str(uuid.uuid4())
        self.ledger.begin(key, "cancel", {"reason": reason}, order_id=order_id, wall=self.wall())
        try:
            st = await self.provider.cancel(order_id)
        except ProviderError as exc:
            self.policy.note_failure(self.clock())
            self.ledger.finish(key, "failed", {"error": str(exc)}, wall=self.wall())
            self._emit(
                "rental_error", f"cancel of {order_id} failed: {exc}", code="cancel", order_id=order_id
            )
            return False
        # PENDING_CANCELLATION stays "pending" in the ledger until a status read says closed
        self.ledger.record_order(st, wall=self.wall(), note=reason)
        self.ledger.finish(key, "done", {"state": st.raw_state, "spent": str(st.spent)}, wall=self.wall())
        self._emit("rental_order_cancelled", reason, order_id=order_id, code=code, spent_btc=f"{st.spent:f}")
        return True

    # --- views ------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The ``GET /api/v1/rentals`` document."""
        cfg = self.config
        target = cfg.target_hs
        orders: list[dict[str, Any]] = []
        spent_today = budget_left = None
        if self.ledger is not None:
            for row in self.ledger.orders(20):
                orders.append(
                    {
                        "id": row["id"],
                        "state": row["raw_state"],
                        "limit_hs": row["limit_hs"],
                        "price": row["price"],
                        "spent_btc": row["spent"],
                        "amount_btc": row["amount"],
                        "remaining_btc": row["remaining"],
                        "delivered_hs": row["delivered_hs"],
                        "pool": row["pool"] or row["pool_id"],
                        "created": row["created"],
                        "closed": row["closed"],
                        "note": row["note"],
                    }
                )
            spent_today = self.ledger.spent_today(self.wall())
            budget_left = self.budget_left()
        delivered = self.delivered_hs
        return {
            "enabled": True,
            "provider": self.provider.name,
            "state": self.state,
            "target_hs": target,
            "delivered_hs": delivered,
            "rented_hs": self.order.delivered_hs if self.order is not None else 0.0,
            "ordered_hs": self.order.limit_hs if self.order is not None else 0.0,
            "deficit_hs": None if delivered is None else max(0.0, target - delivered),
            "pool": self.destination.name,
            "active_order": self.order.id if self.order is not None else None,
            "orders": orders,
            "budget_btc": str(cfg.daily_budget),
            "spent_today_btc": None if spent_today is None else str(spent_today),
            "budget_left_btc": None if budget_left is None else str(max(budget_left, Decimal(0))),
            "max_price": cfg.max_price,  # a decimal string, or "hashprice"
            "max_premium": cfg.max_premium if cfg.follows_hashprice else None,
            # the cap in force now: max_price, or the hashprice plus max_premium (None: unknown)
            "price_cap": decimal_text(self.price_cap()),
            "hashprice": decimal_text(self.hashprice.value if self.hashprice is not None else None),
            "hashprice_reason": self.hashprice.reason if self.hashprice is not None else None,
            "market_price": decimal_text(self.quote.price if self.quote is not None else None),
            # the marketplace's price precision (decimals of its price step), None until quoted
            "price_decimals": price_decimals(self.quote.price_down_step) if self.quote is not None else None,
            "last_decision": self.last_decision,
        }

    def metrics(self) -> dict[str, float | None]:
        """Numbers for /metrics (floats: Prometheus has no decimals; None: no sample)."""
        spent_total = float(self.ledger.spent_total()) if self.ledger is not None else 0.0
        budget_left = float(max(self.budget_left(), Decimal(0))) if self.ledger is not None else 0.0
        order = self.order
        return {
            "ordered_hashrate": order.limit_hs if order is not None else 0.0,
            "delivered_hashrate": order.delivered_hs if order is not None else 0.0,
            "order_price_btc": float(order.price) if order is not None else None,
            "max_price_btc": _float_or_none(self.price_cap()),
            "hashprice_btc": _float_or_none(self.hashprice.value if self.hashprice is not None else None),
            "market_price_btc": _float_or_none(self.quote.price if self.quote is not None else None),
            "farm_hashrate": self.delivered_hs,
            "spent_btc_total": spent_total,
            "budget_btc": float(self.config.daily_budget),
            "budget_left_btc": budget_left,
            "target_hashrate": float(self.config.target_hs),
        }


def _float_or_none(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
