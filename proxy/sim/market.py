"""A simulated hashpower marketplace serving NiceHash API v2's routes, over loopback.

Same request shapes and the same signature check as NiceHash (``proxy.rental.signing`` is
the one implementation, used by the client too), order states (PENDING, ACTIVE,
PENDING_CANCELLATION, CANCELLED, COMPLETED), the cooldown errors (5061 price, 5110 limit),
idempotent POSTs by ``X-Request-Id``, and fault injection (429, 5xx, held answers).

Orders really deliver: an order becomes ACTIVE ``activation_delay_s`` after creation, and an
ACTIVE order whose price is at least the market price runs simulated rigs
(``proxy.sim.rigs.RigFleet``, one per rig so the order can grow and shrink) against the host
and port of the pool it points at, as many as ``limit / rig_hashrate_hs``.  A sim rig submits
one share per ``rig_share_interval`` at ``rig_difficulty``, so its hashrate is
``rig_difficulty * 2**32 / rig_share_interval`` H/s; the marketplace's unit is therefore
H/s (``marketFactor`` 1), so the proxy's measurement and the order's numbers agree.

Spend accrues as ``price * delivered * elapsed`` with ``elapsed`` on a scaled clock
(``time_scale`` market seconds per real second), and stops at the order's amount, when the
order COMPLETES.  Cancelling refunds the rest (``availableAmount`` goes to 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from ..rental.signing import verify
from .ethrigs import EthRigFleet
from .market_model import (
    ALIVE,
    ETHASH,
    TITLES,
    SimMarketConfig,
    SimOrder,
    SimPoolEntry,
    _Fault,
    _fmt,
    _sat,
)
from .rigs import RigFleet

log = logging.getLogger("proxy.sim.market")

__all__ = ["SimMarket", "SimMarketConfig", "SimOrder"]

class SimMarket:
    """The marketplace: ``await start()`` then point a NiceHashProvider at ``url``."""

    def __init__(self, config: SimMarketConfig | None = None) -> None:
        self.config = config or SimMarketConfig()
        self.pools: dict[str, SimPoolEntry] = {}
        self.orders: dict[str, SimOrder] = {}
        self.requests: list[tuple[float, str, str, int]] = []  # (loop time, method, path, status)
        self.user_agents: set[str] = set()  # X-User-Agent of every signed request
        self.create_calls = 0  # create requests executed (not answered from the idempotency cache)
        self.auth_failures = 0
        self.hold_creates: asyncio.Event | None = None  # set: create answers are held until it is set
        self.created_event = asyncio.Event()
        self._faults: list[_Fault] = []
        self._lost_answer: _Fault | None = None
        self._seen_requests: dict[str, tuple[int, Any]] = {}
        self._nonces: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._last_tick = 0.0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        r = app.router
        r.add_get("/api/v2/time", self._time)
        r.add_get("/main/api/v2/mining/algorithms", self._algorithms)
        r.add_get("/main/api/v2/hashpower/orderBook", self._order_book)
        r.add_get("/main/api/v2/pools/", self._list_pools)
        r.add_post("/main/api/v2/pool/", self._create_pool)
        r.add_post("/main/api/v2/hashpower/order/", self._create_order)
        r.add_post("/main/api/v2/hashpower/order/{id}/updatePriceAndLimit/", self._update_order)
        r.add_post("/main/api/v2/hashpower/order/{id}/refill/", self._refill)
        r.add_delete("/main/api/v2/hashpower/order/{id}", self._cancel)
        r.add_get("/main/api/v2/hashpower/order/{id}", self._get_order)
        r.add_get("/main/api/v2/hashpower/myOrders", self._my_orders)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        self._last_tick = loop.time()
        self._tick_task = loop.create_task(self._tick_loop(), name="sim-market-tick")

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        if self.hold_creates is not None:
            self.hold_creates.set()
        for task in list(self._bg):
            task.cancel()
        if self._bg:
            await asyncio.wait(list(self._bg), timeout=2.0)
        for order in self.orders.values():
            await self._stop_fleets(order, len(order.fleets))
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SimMarket:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- fault injection and views ----------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        code: int | None = None,
        message: str = "",
        retry_after: float | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next ``count`` matching signed requests with ``status`` (429, 500, 503 ...);
        with ``after`` the request is executed first and only its answer is replaced (lost)."""
        self._faults.append(_Fault(status, count, method, path_contains, code, message, retry_after, after))

    def cooldown_next(self, code: int, seconds: float, count: int = 1) -> None:
        """The next ``count`` price/limit updates get error ``code`` (5061 / 5110) saying ``seconds``."""
        self.fail_next(
            400,
            count,
            method="POST",
            path_contains="updatePriceAndLimit",
            code=code,
            message=f"Price or limit change not allowed yet; try again in {seconds:g} seconds",
        )

    def alive_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.state in ALIVE]

    def delivered_hs(self) -> float:
        return sum(o.delivered_hs for o in self.orders.values())

    def spent(self) -> Decimal:
        return sum((o.spent for o in self.orders.values()), Decimal(0))

    # --- helpers ----------------------------------------------------------------------------

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {"error_id": str(uuid.uuid4()), "errors": [{"code": code, "message": message}]}, status=status
        )

    async def _authorize(self, request: web.Request) -> tuple[web.Response | None, bytes]:
        body = await request.read()
        h = request.headers
        self.user_agents.add(h.get("X-User-Agent", ""))
        stamp, nonce, org, auth = (
            h.get("X-Time", ""),
            h.get("X-Nonce", ""),
            h.get("X-Organization-Id", ""),
            h.get("X-Auth", ""),
        )
        now_ms = time.time() * 1000
        ok = (
            bool(stamp.isdigit() and nonce and auth)
            and abs(now_ms - int(stamp)) <= self.config.max_skew_s * 1000
        )
        path, _, _ = request.raw_path.partition("?")
        if ok:
            key = auth.split(":", 1)[0]
            ok = (
                key == self.config.key
                and org == self.config.org
                and nonce not in self._nonces
                and verify(
                    auth,
                    self.config.key,
                    self.config.secret,
                    stamp,
                    nonce,
                    org,
                    request.method,
                    path,
                    request.query_string,
                    body or None,
                )
            )
        if not ok:
            self.auth_failures += 1
            return self._error(403, 2000, "Invalid signature or time"), body
        self._nonces.add(nonce)
        fault = self._fault(request.method, path)
        if fault is not None and not fault.after:
            return self._fault_response(fault), body
        self._lost_answer = fault
        return None, body

    def _fault_response(self, fault: _Fault) -> web.Response:
        if fault.code is not None:
            return self._error(fault.status, fault.code, fault.message)
        resp = self._error(fault.status, 5000 + fault.status, f"injected {fault.status}")
        if fault.retry_after is not None:
            resp.headers["Retry-After"] = f"{fault.retry_after:g}"
        return resp

    def _fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if (fault.method is None or fault.method == method) and (
                fault.path_contains is None or fault.path_contains in path
            ):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _record(self, request: web.Request, resp: web.Response) -> web.Response:
        self.requests.append((asyncio.get_running_loop().time(), request.method, request.path, resp.status))
        return resp

    async def _signed(self, request: web.Request, handler: Any, idempotent: bool = False) -> web.Response:
        denied, body = await self._authorize(request)
        lost, self._lost_answer = self._lost_answer, None
        if denied is not None:
            return self._record(request, denied)
        rid = request.headers.get("X-Request-Id", "")
        if idempotent and rid and rid in self._seen_requests:
            status, data = self._seen_requests[rid]
            return self._record(request, web.json_response(data, status=status))
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return self._record(request, self._error(400, 3001, "body is not JSON"))
        result = await handler(request, data)
        if isinstance(result, web.Response):
            return self._record(request, result)
        if idempotent and rid:
            self._seen_requests[rid] = (200, result)
        if lost is not None:
            return self._record(request, self._fault_response(lost))
        return self._record(request, web.json_response(result))

    def _order_json(self, o: SimOrder) -> dict[str, Any]:
        return {
            "id": o.id,
            "type": {"code": "STANDARD"},
            "market": self.config.market,
            "algorithm": {"algorithm": self.config.algorithm},
            "status": {"code": o.state},
            "alive": o.state in ALIVE,
            "price": _fmt(o.price),
            "limit": _fmt(o.limit),
            "amount": _fmt(o.amount),
            # like NiceHash: 8 decimals; spend rounded up so it is never under-reported
            "availableAmount": _fmt(max(o.amount - o.refunded - _sat(o.spent), Decimal(0))),
            "payedAmount": _fmt(_sat(o.spent)),
            "acceptedCurrentSpeed": _fmt(Decimal(repr(o.delivered_hs))),
            "rigsCount": o.rigs_working(),
            "pool": {
                "id": o.pool.id,
                "name": o.pool.name,
                "stratumHostname": o.pool.host,
                "stratumPort": o.pool.port,
                "username": o.pool.username,
            },
            # as NiceHash: the order's start time is startTs (there is no creationTime)
            "startTs": datetime.fromtimestamp(o.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "marketFactor": "1",
            "displayMarketFactor": "H",
        }

    def _find(self, request: web.Request) -> SimOrder | web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return self._error(404, 5054, "Order not found")
        return order

    @staticmethod
    def _decimal(data: dict[str, Any], name: str) -> Decimal | None:
        try:
            value = Decimal(str(data[name]))
        except (KeyError, InvalidOperation):
            return None
        return value if value.is_finite() else None

    # --- routes -----------------------------------------------------------------------------

    async def _time(self, request: web.Request) -> web.Response:
        return self._record(request, web.json_response({"serverTime": int(time.time() * 1000)}))

    async def _algorithms(self, request: web.Request) -> web.Response:
        c = self.config
        return self._record(
            request,
            web.json_response(
                {
                    "miningAlgorithms": [
                        {
                            "algorithm": c.algorithm,
                            "title": TITLES.get(c.algorithm, c.algorithm),
                            "enabled": True,
                            "marketFactor": "1",
                            "displayMarketFactor": "H",
                            "minimalOrderAmount": _fmt(c.min_amount),
                            "minSpeedLimit": _fmt(c.min_limit),
                            "maxSpeedLimit": _fmt(c.max_limit),
                            "priceDownStep": _fmt(c.price_down_step),
                            "minimalPoolDifficulty": "0.000001",
                        }
                    ]
                }
            ),
        )

    async def _order_book(self, request: web.Request) -> web.Response:
        c = self.config
        book = [
            {
                "id": "competitor",
                "type": "STANDARD",
                "price": _fmt(c.market_price),
                "limit": "0",
                "rigsCount": 1000,
                "acceptedSpeed": _fmt(Decimal(repr(c.available_hs))),
                "payingSpeed": "0",
                "alive": True,
            }
        ]
        book += [
            {
                "id": o.id,
                "type": "STANDARD",
                "price": _fmt(o.price),
                "limit": _fmt(o.limit),
                "rigsCount": o.rigs_working(),
                "acceptedSpeed": _fmt(Decimal(repr(o.delivered_hs))),
                "payingSpeed": "0",
                "alive": True,
            }
            for o in self.alive_orders()
        ]
        return self._record(
            request,
            web.json_response(
                {
                    "stats": {
                        c.market: {
                            "updatedTs": datetime.now(UTC).isoformat(),
                            "totalSpeed": _fmt(Decimal(repr(c.available_hs))),
                            "marketFactor": "1",
                            "displayMarketFactor": "H",
                            "orders": book,
                        }
                    }
                }
            ),
        )

    async def _list_pools(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            return {
                "list": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "algorithm": self.config.algorithm,
                        "stratumHostname": p.host,
                        "stratumPort": p.port,
                        "username": p.username,
                    }
                    for p in self.pools.values()
                ]
            }

        return await self._signed(request, handler)

    async def _create_pool(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            try:
                entry = SimPoolEntry(
                    str(uuid.uuid4()),
                    str(data["name"]),
                    str(data["stratumHostname"]),
                    int(data["stratumPort"]),
                    str(data["username"]),
                    str(data.get("password", "x")),
                )
            except (KeyError, ValueError, TypeError):
                return self._error(400, 3001, "pool needs name, stratumHostname, stratumPort, username")
            self.pools[entry.id] = entry
            return {
                "id": entry.id,
                "name": entry.name,
                "algorithm": self.config.algorithm,
                "stratumHostname": entry.host,
                "stratumPort": entry.port,
                "username": entry.username,
            }

        return await self._signed(request, handler, idempotent=True)

    async def _create_order(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            c = self.config
            price, limit, amount = (self._decimal(data, n) for n in ("price", "limit", "amount"))
            if price is None or limit is None or amount is None or price <= 0:
                return self._error(400, 3001, "price, limit and amount are required decimal strings")
            if (
                data.get("algorithm") != c.algorithm
                or data.get("market") != c.market
                or data.get("type") != "STANDARD"
            ):
                return self._error(400, 3001, "unknown algorithm, market or type")
            if str(data.get("marketFactor")) != "1" or str(data.get("displayMarketFactor")) != "H":
                return self._error(400, 3001, "marketFactor/displayMarketFactor missing or wrong")
            if amount < c.min_amount:
                return self._error(400, 5056, f"Amount below the minimum {c.min_amount}")
            if not c.min_limit <= limit <= c.max_limit:
                return self._error(400, 5057, f"Limit outside {c.min_limit}..{c.max_limit}")
            pool = self.pools.get(str(data.get("poolId")))
            if pool is None:
                return self._error(400, 5055, "Unknown pool")
            self.create_calls += 1
            loop = asyncio.get_running_loop()
            order = SimOrder(
                str(uuid.uuid4()), pool, price, limit, amount, time.time(), loop.time() + c.activation_delay_s
            )
            self.orders[order.id] = order
            self.created_event.set()
            if self.hold_creates is not None:
                await self.hold_creates.wait()  # the order exists; its answer is held (crash tests)
            return self._order_json(order)

        return await self._signed(request, handler, idempotent=True)

    async def _update_order(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            found = self._find(request)
            if isinstance(found, web.Response):
                return found
            order = found
            if order.state not in ("PENDING", "ACTIVE"):
                return self._error(400, 5059, f"Order is {order.state}")
            price, limit = self._decimal(data, "price"), self._decimal(data, "limit")
            if price is None or limit is None or price <= 0:
                return self._error(400, 3001, "price and limit are required decimal strings")
            if str(data.get("marketFactor")) != "1" or str(data.get("displayMarketFactor")) != "H":
                return self._error(400, 3001, "marketFactor/displayMarketFactor missing or wrong")
            c = self.config
            now = asyncio.get_running_loop().time()
            if price < order.price:
                wait = order.last_price_change + c.price_down_cooldown_s - now
                if wait > 0:
                    return self._error(
                        400, 5061, f"Price decrease not allowed for another {wait:.0f} seconds"
                    )
            if limit != order.limit and c.limit_cooldown_s > 0:
                wait = order.last_limit_change + c.limit_cooldown_s - now
                if wait > 0:
                    return self._error(400, 5110, f"Limit change not allowed for another {wait:.0f} seconds")
            if not c.min_limit <= limit <= c.max_limit:
                return self._error(400, 5057, f"Limit outside {c.min_limit}..{c.max_limit}")
            if price != order.price:
                order.price, order.last_price_change = price, now
            if limit != order.limit:
                order.limit, order.last_limit_change = limit, now
            return self._order_json(order)

        return await self._signed(request, handler)

    async def _refill(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            found = self._find(request)
            if isinstance(found, web.Response):
                return found
            amount = self._decimal(data, "amount")
            if amount is None or amount < self.config.min_amount:
                return self._error(400, 5056, f"Amount below the minimum {self.config.min_amount}")
            if found.state not in ("PENDING", "ACTIVE"):
                return self._error(400, 5059, f"Order is {found.state}")
            found.amount += amount
            return self._order_json(found)

        return await self._signed(request, handler, idempotent=True)

    async def _cancel(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            found = self._find(request)
            if isinstance(found, web.Response):
                return found
            if found.state in ("PENDING", "ACTIVE", "PENDING_CANCELLATION"):
                found.refunded = found.amount - found.spent
                found.state = "CANCELLED"
                found.delivered_hs = 0.0
                self._spawn(self._stop_fleets(found, len(found.fleets)))
            return self._order_json(found)

        return await self._signed(request, handler)

    async def _get_order(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            found = self._find(request)
            return found if isinstance(found, web.Response) else self._order_json(found)

        return await self._signed(request, handler)

    async def _my_orders(self, request: web.Request) -> web.Response:
        async def handler(request: web.Request, data: dict[str, Any]) -> Any:
            active = request.query.get("active", "").lower() == "true"
            orders = [o for o in self.orders.values() if not active or o.state in ALIVE]
            return {"list": [self._order_json(o) for o in sorted(orders, key=lambda o: -o.created)]}

        return await self._signed(request, handler)

    # --- delivery ---------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.tick_s)
            now = loop.time()
            dt, self._last_tick = now - self._last_tick, now
            try:
                self._tick(now, dt)
            except Exception:
                log.exception("sim market tick failed")

    def _tick(self, now: float, dt: float) -> None:
        c = self.config
        for order in self.orders.values():
            if order.state == "PENDING" and now >= order.activate_at:
                order.state = "ACTIVE"
                log.info(
                    "sim market: order %s ACTIVE (limit %s H/s at %s)", order.id, order.limit, order.price
                )
            if order.state != "ACTIVE":
                continue
            working = order.rigs_working()
            order.delivered_hs = (
                min(working * c.rig_hashrate_hs, float(order.limit) * 1.0) if working else 0.0
            )
            if order.delivered_hs:
                cost = (
                    order.price
                    * Decimal(repr(order.delivered_hs))
                    * Decimal(repr(dt * c.time_scale))
                    / Decimal(86400)
                )
                order.spent = min(order.amount - order.refunded, order.spent + cost)
                if order.available <= 0:
                    order.state = "COMPLETED"
                    order.delivered_hs = 0.0
                    self._spawn(self._stop_fleets(order, len(order.fleets)))
                    continue
            want = 0
            if order.price >= c.market_price:
                want = max(1, round(float(order.limit) / c.rig_hashrate_hs))
            have = len(order.fleets) + order.starting
            if want > have:
                order.starting += want - have
                for _ in range(want - have):
                    self._spawn(self._start_rig(order))
            elif want < len(order.fleets):
                self._spawn(self._stop_fleets(order, len(order.fleets) - want))

    async def _start_rig(self, order: SimOrder) -> None:
        # an Ethash-family order book rents GPU rigs (EthereumStratum/1.0.0), the others ASICs
        ethash = self.config.algorithm in ETHASH
        kind: Any = EthRigFleet if ethash else RigFleet
        fleet = kind(
            order.pool.host,
            order.pool.port,
            1,
            worker_prefix=order.pool.username,
            password=order.pool.password,
            share_interval=self.config.rig_share_interval,
            **({} if ethash else {"connect_timeout": 2.0}),
        )
        try:
            await fleet.start()
        finally:
            order.starting -= 1
        if order.state != "ACTIVE":
            await fleet.stop()
            return
        order.fleets.append(fleet)

    async def _stop_fleets(self, order: SimOrder, count: int) -> None:
        doomed, order.fleets = (
            order.fleets[len(order.fleets) - count :],
            order.fleets[: len(order.fleets) - count],
        )
        for fleet in doomed:
            await fleet.stop()
