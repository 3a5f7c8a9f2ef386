"""NiceHash API v2 hashpower client (aiohttp), with the real request shapes and signing.

Also the client for the simulated marketplace (``proxy.sim.market``), which serves the same
routes: ``provider = "sim"`` is this class pointed at the simulator's URL.

Retries: reads (GET) and cancels (DELETE) are retried on 429, 5xx and network errors; POSTs
(create, update, refill) are retried only with the *same* ``X-Request-Id``, which NiceHash
(and the simulator) use to answer a repeated request instead of executing it twice.  A 429
honours ``Retry-After``.  Error 2000 (bad signature or time) resyncs the clock once.

Secrets: the API secret is used only inside ``sign``; neither it nor the full ``X-Auth``
value is ever logged or put into an exception message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from .. import __version__
from .provider import (
    PH,
    AuthFailed,
    Capabilities,
    CooldownError,
    Destination,
    OrderStatus,
    ProviderError,
    Quote,
)
from .signing import sign

# NiceHash asks every API client to name itself in X-User-Agent
USER_AGENT = f"stratum-proxy/{__version__}"

log = logging.getLogger("proxy.rental.nicehash")

MAINNET_URL = "https://api2.nicehash.com"
TESTNET_URL = "https://api-test.nicehash.com"
ORDER = "/main/api/v2/hashpower/order/"
COOLDOWN_CODES = (5061, 5110)
AUTH_CODES = (2000,)
_PENDING = {"PENDING", "PENDING_CANCELLATION"}
_ACTIVE = {"ACTIVE"}

__all__ = ["MAINNET_URL", "TESTNET_URL", "NiceHashProvider", "parse_error"]


def _dec(value: Any, default: str = "0") -> Decimal:
    if value is None or value == "":
        return Decimal(default)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(default)


def _seconds_in(message: str) -> float | None:
    match = re.search(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", message) or re.search(
        r"(\d+(?:\.\d+)?)", message
    )
    return float(match.group(1)) if match else None


def parse_error(status: int, body: bytes) -> ProviderError:
    """``{"error_id", "errors": [{"code", "message"}]}`` -> the matching ProviderError."""
    code: int | None = None
    first: dict[str, Any] = {}
    message = f"HTTP {status}"
    try:
        data = json.loads(body)
        first = (data.get("errors") or [{}])[0]
        code = int(first.get("code")) if first.get("code") is not None else None
        message = f"HTTP {status} error {code}: {first.get('message', '')} (error_id {data.get('error_id')})"
    except (ValueError, TypeError, AttributeError, IndexError):
        message = f"HTTP {status}: {body[:200]!r}"
    if code in COOLDOWN_CODES:
        seconds = _seconds_in(str(first.get("message", "")))
        return CooldownError(message, seconds if seconds is not None else 600.0, code=code, status=status)
    if code in AUTH_CODES or status in (401, 403):
        return AuthFailed(message, code=code, status=status)
    return ProviderError(message, code=code, status=status, retryable=status == 429 or status >= 500)


def _created(value: Any) -> float:
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return 0.0


class NiceHashProvider:
    """The marketplace behind the provider interface; see the module docstring."""

    name = "nicehash"

    def __init__(
        self,
        base_url: str,
        key: str,
        secret: str,
        org: str,
        *,
        market: str = "EU",
        algorithm: str = "SHA256ASICBOOST",
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._secret = secret
        self._org = org
        self.market = market
        self.algorithm = algorithm
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._sleep = sleep
        self._session = session
        self._own_session = session is None
        self.clock_offset_ms: int | None = None
        self._algo: dict[str, Any] | None = None
        self.capabilities = Capabilities(
            cancel=True,
            refunds=True,
            change_speed=True,
            change_price=True,
            price_decrease_cooldown_s=600.0,
            min_duration_s=0.0,
            idempotent_create=True,
        )
        self.requests = 0  # HTTP requests sent, for tests and the API
        self.retries = 0

    def __repr__(self) -> str:  # never show credentials
        return f"NiceHashProvider({self.base_url!r}, market={self.market!r}, algorithm={self.algorithm!r})"

    # --- plumbing ---------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def sync_time(self) -> None:
        """Keep the offset between our clock and NiceHash's (X-Time must be within its window)."""
        data = await self._send("GET", "/api/v2/time", signed=False)
        server = int(data["serverTime"])
        self.clock_offset_ms = server - int(time.time() * 1000)
        log.debug("nicehash clock offset %d ms", self.clock_offset_ms)

    def _now_ms(self) -> str:
        return str(int(time.time() * 1000) + (self.clock_offset_ms or 0))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        signed: bool = True,
        request_id: str | None = None,
    ) -> Any:
        """One logical request with the retry policy of the module docstring."""
        if signed and self.clock_offset_ms is None:
            await self.sync_time()
        query_string = urlencode(query or [], quote_via=quote)
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        # one id for every attempt of this logical request: a retried POST carries the same
        # X-Request-Id, so the marketplace answers it instead of executing it twice
        request_id = request_id or str(uuid.uuid4())
        resynced = False
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": "application/json", "X-Request-Id": request_id, "X-User-Agent": USER_AGENT}
            if raw is not None:
                headers["Content-Type"] = "application/json"
            if signed:
                stamp, nonce = self._now_ms(), str(uuid.uuid4())
                headers.update(
                    {
                        "X-Time": stamp,
                        "X-Nonce": nonce,
                        "X-Organization-Id": self._org,
                        "X-Auth": sign(
                            self._key, self._secret, stamp, nonce, self._org, method, path, query_string, raw
                        ),
                    }
                )
            url = self.base_url + path + (f"?{query_string}" if query_string else "")
            self.requests += 1
            delay: float | None = None
            try:
                async with self._client().request(
                    method, url, data=raw, headers=headers, timeout=self.timeout
                ) as resp:
                    payload = await resp.read()
                    if resp.status < 400:
                        return json.loads(payload) if payload.strip() else {}
                    error = parse_error(resp.status, payload)
                    if resp.status == 429:
                        retry_after = resp.headers.get("Retry-After", "")
                        delay = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                error = ProviderError(
                    f"{method} {path}: network error: {type(exc).__name__}: {exc}", retryable=True
                )
            if isinstance(error, AuthFailed) and signed and not resynced:
                # error 2000 is also what a drifted clock gets: resync once, then give up
                resynced = True
                log.warning("nicehash %s %s: %s; resyncing the clock and retrying once", method, path, error)
                await self.sync_time()
                continue
            if not error.retryable or attempt >= self.attempts:
                raise error
            self.retries += 1
            wait = (
                delay if delay is not None else min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            )
            log.info(
                "nicehash %s %s: %s; retry %d/%d in %.2fs",
                method,
                path,
                error,
                attempt,
                self.attempts - 1,
                wait,
            )
            await self._sleep(wait)

    async def _algorithm(self) -> dict[str, Any]:
        if self._algo is None:
            data = await self._send("GET", "/main/api/v2/mining/algorithms", signed=False)
            for algo in data.get("miningAlgorithms", []):
                if str(algo.get("algorithm", "")).upper() == self.algorithm.upper():
                    self._algo = algo
                    break
            else:
                raise ProviderError(f"algorithm {self.algorithm} not offered by the marketplace")
        return self._algo

    async def _factor(self) -> Decimal:
        """Hashes per second in one unit of the market's limit (PH/s: 1e15)."""
        return _dec((await self._algorithm()).get("marketFactor"), str(PH))

    async def _factors(self) -> dict[str, str]:
        algo = await self._algorithm()
        return {
            "marketFactor": str(algo.get("marketFactor", PH)),
            "displayMarketFactor": str(algo.get("displayMarketFactor", "PH")),
        }

    async def _to_market_price(self, price_per_ph: Decimal) -> Decimal:
        return price_per_ph * await self._factor() / PH

    async def _order(self, data: dict[str, Any]) -> OrderStatus:
        factor = await self._factor()
        status = data.get("status")
        raw = str((status.get("code") if isinstance(status, dict) else status) or "UNKNOWN").upper()
        state = "active" if raw in _ACTIVE else "pending" if raw in _PENDING else "closed"
        pool = data.get("pool")
        pool_id = str((pool.get("id") if isinstance(pool, dict) else None) or data.get("poolId") or "")
        amount = _dec(data.get("amount"))
        spent = _dec(data.get("payedAmount"))
        remaining = _dec(data.get("availableAmount"), str(max(amount - spent, Decimal(0))))
        return OrderStatus(
            id=str(data["id"]),
            state=state,
            raw_state=raw,
            limit_hs=float(_dec(data.get("limit")) * factor),
            price=_dec(data.get("price")) * PH / factor,
            amount=amount,
            spent=spent,
            remaining=remaining,
            delivered_hs=float(_dec(data.get("acceptedCurrentSpeed")) * factor),
            pool_id=pool_id,
            # NiceHash's order JSON carries startTs (ISO 8601); creationTime / created are
            # read too, for older answers and other emulators
            created=_created(data.get("startTs") or data.get("creationTime") or data.get("created")),
        )

    # --- the provider interface ---------------------------------------------------------------

    async def quote(self) -> Quote:
        algo = await self._algorithm()
        factor = await self._factor()
        book = await self._send(
            "GET",
            "/main/api/v2/hashpower/orderBook",
            signed=False,
            query=[("algorithm", self.algorithm), ("page", "0"), ("size", "1000")],
        )
        stats = (book.get("stats") or {}).get(self.market) or {}
        paying = [
            _dec(o.get("price"))
            for o in stats.get("orders", [])
            if o.get("alive", True)
            and _dec(o.get("acceptedSpeed")) > 0
            and str(o.get("type", "STANDARD")).upper() == "STANDARD"
        ]
        market_price = min(paying) if paying else Decimal(0)
        return Quote(
            price=market_price * PH / factor,
            available_hs=float(_dec(stats.get("totalSpeed")) * factor),
            min_amount=_dec(algo.get("minimalOrderAmount"), "0.001"),
            min_limit_hs=float(_dec(algo.get("minSpeedLimit"), "0.001") * factor),
            max_limit_hs=float(_dec(algo.get("maxSpeedLimit"), "10000") * factor),
            price_down_step=abs(_dec(algo.get("priceDownStep"))) * PH / factor,
        )

    async def ensure_pool(self, dest: Destination) -> str:
        pools = await self._send("GET", "/main/api/v2/pools/", query=[("size", "100"), ("page", "0")])
        for pool in pools.get("list", []):
            if (
                str(pool.get("stratumHostname")) == dest.host
                and int(pool.get("stratumPort", 0)) == dest.port
                and str(pool.get("username")) == dest.user
                and str(pool.get("algorithm", self.algorithm)).upper() == self.algorithm.upper()
            ):
                return str(pool["id"])
        created = await self._send(
            "POST",
            "/main/api/v2/pool/",
            body={
                "algorithm": self.algorithm,
                "name": dest.name[:60],
                "username": dest.user,
                "password": dest.password,
                "stratumHostname": dest.host,
                "stratumPort": dest.port,
            },
        )
        log.info(
            "nicehash: registered pool %s (%s:%d) as %s", dest.name, dest.host, dest.port, created.get("id")
        )
        return str(created["id"])

    async def _speed(self, limit_hs: float) -> str:
        factor = await self._factor()
        return str((Decimal(repr(limit_hs)) / factor).quantize(Decimal("0.00000001")).normalize())

    async def place_order(
        self, *, limit_hs: float, pool_id: str, price: Decimal, amount: Decimal, idempotency_key: str
    ) -> OrderStatus:
        body = {
            "market": self.market,
            "algorithm": self.algorithm,
            "amount": str(amount),
            "price": str(await self._to_market_price(price)),
            "limit": await self._speed(limit_hs),
            "poolId": pool_id,
            "type": "STANDARD",
            **await self._factors(),
        }
        return await self._order(await self._send("POST", ORDER, body=body, request_id=idempotency_key))

    async def update_order(self, order_id: str, *, price: Decimal, limit_hs: float) -> OrderStatus:
        body = {
            "price": str(await self._to_market_price(price)),
            "limit": await self._speed(limit_hs),
            **await self._factors(),
        }
        await self._send("POST", f"{ORDER}{order_id}/updatePriceAndLimit/", body=body)
        return await self.status(order_id)

    async def refill(self, order_id: str, amount: Decimal, idempotency_key: str) -> OrderStatus:
        await self._send(
            "POST", f"{ORDER}{order_id}/refill/", body={"amount": str(amount)}, request_id=idempotency_key
        )
        return await self.status(order_id)

    async def cancel(self, order_id: str) -> OrderStatus:
        data = await self._send("DELETE", f"/main/api/v2/hashpower/order/{order_id}")
        if isinstance(data, dict) and "id" in data:
            return await self._order(data)
        return await self.status(order_id)

    async def status(self, order_id: str) -> OrderStatus:
        return await self._order(await self._send("GET", f"/main/api/v2/hashpower/order/{order_id}"))

    async def active_orders(self) -> list[OrderStatus]:
        data = await self._send(
            "GET",
            "/main/api/v2/hashpower/myOrders",
            query=[
                ("algorithm", self.algorithm),
                ("market", self.market),
                ("active", "true"),
                ("op", "LT"),
                ("limit", "100"),
                ("ts", self._now_ms()),
            ],
        )
        return [await self._order(o) for o in data.get("list", [])]
