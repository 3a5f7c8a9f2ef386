"""The provider interface: what the backfill controller needs from a hashpower marketplace.

Units at this boundary are the controller's, whatever the marketplace uses internally:
hashrate in H/s (float, a measurement), prices in BTC per PH/s per day and amounts in BTC
(always ``Decimal``, never float).  A provider converts to its own units (NiceHash: the
algorithm's ``marketFactor``) inside its client.

Order states are normalised to three words the controller reasons about: ``pending``
(accepted, not delivering yet), ``active`` (may deliver), ``closed`` (cancelled, completed,
expired, dead, failed: it will never deliver or spend again).  ``raw_state`` keeps the
provider's own word for the API and the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

__all__ = [
    "AuthFailed",
    "Capabilities",
    "CooldownError",
    "Destination",
    "OrderStatus",
    "Provider",
    "ProviderError",
    "Quote",
]

PH = 10**15


@dataclass(frozen=True)
class Capabilities:
    """What a marketplace allows; the controller plans around these instead of failing."""

    cancel: bool = True
    refunds: bool = True  # unspent escrow comes back on cancel
    change_speed: bool = True  # the limit of a live order can be changed
    change_price: bool = True
    price_decrease_cooldown_s: float = 0.0  # a lower price only this long after the last change
    min_duration_s: float = 0.0  # the marketplace bills at least this long per order
    idempotent_create: bool = False  # a retried create with the same key returns the same order


@dataclass(frozen=True)
class Quote:
    price: Decimal  # BTC/PH/day an order needs now to receive hashpower
    available_hs: float  # hashrate the market is selling (an estimate; 0 when unknown)
    min_amount: Decimal  # smallest escrow an order may be created or refilled with (BTC)
    min_limit_hs: float  # smallest speed limit of an order
    max_limit_hs: float  # largest speed limit of an order
    price_down_step: Decimal = Decimal(0)  # largest single price decrease (BTC/PH/day), 0 = any


@dataclass(frozen=True)
class Destination:
    """Where rented hashpower is pointed: a stratum host:port and the credentials to use."""

    name: str
    host: str
    port: int
    user: str
    password: str = field(default="x", repr=False)


@dataclass
class OrderStatus:
    id: str
    state: str  # pending | active | closed
    raw_state: str
    limit_hs: float
    price: Decimal
    amount: Decimal  # escrow put in so far (create + refills)
    spent: Decimal
    remaining: Decimal
    delivered_hs: float
    pool_id: str
    created: float  # wall clock, seconds since the epoch

    @property
    def alive(self) -> bool:
        return self.state in ("pending", "active")

    def view(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.raw_state,
            "limit_hs": self.limit_hs,
            "price": str(self.price),
            "amount_btc": str(self.amount),
            "spent_btc": str(self.spent),
            "remaining_btc": str(self.remaining),
            "delivered_hs": self.delivered_hs,
            "pool_id": self.pool_id,
            "created": self.created,
        }


class ProviderError(Exception):
    """A marketplace refusal or failure; ``code`` is the marketplace's error code when it gave one."""

    def __init__(
        self, message: str, *, code: int | None = None, status: int | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retryable = retryable


class CooldownError(ProviderError):
    """A price or limit change refused for now; allowed again after ``retry_after_s``."""

    def __init__(
        self, message: str, retry_after_s: float, *, code: int | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after_s = retry_after_s


class AuthFailed(ProviderError):
    """Bad credentials, signature or clock (NiceHash error 2000)."""


class Provider(Protocol):
    name: str
    capabilities: Capabilities

    async def quote(self) -> Quote: ...

    async def ensure_pool(self, dest: Destination) -> str:
        """Register ``dest`` with the marketplace if it is not yet; return its pool id."""

    async def place_order(
        self, *, limit_hs: float, pool_id: str, price: Decimal, amount: Decimal, idempotency_key: str
    ) -> OrderStatus:
        """Create one order; retrying with the same key must never create a second one."""

    async def update_order(self, order_id: str, *, price: Decimal, limit_hs: float) -> OrderStatus: ...

    async def refill(self, order_id: str, amount: Decimal, idempotency_key: str) -> OrderStatus: ...

    async def cancel(self, order_id: str) -> OrderStatus: ...

    async def status(self, order_id: str) -> OrderStatus: ...

    async def active_orders(self) -> list[OrderStatus]: ...

    async def close(self) -> None: ...
