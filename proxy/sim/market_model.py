"""The simulated marketplace's records: its configuration, the pools and orders it holds, the
faults a test asks of it (``proxy.sim.market`` serves them over NiceHash API v2's routes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from .ethrigs import EthRigFleet
from .rigs import RigFleet

HASHES_PER_DIFF1 = 2**32
# the order books this market can be (one per instance, as NiceHash has one per algorithm):
# the Ethash family's rigs are GPU rigs speaking EthereumStratum/1.0.0
TITLES = {"SHA256ASICBOOST": "SHA256AsicBoost", "DAGGERHASHIMOTO": "DaggerHashimoto", "ETCHASH": "Etchash"}
ETHASH = frozenset({"DAGGERHASHIMOTO", "ETCHASH"})
ALIVE = ("PENDING", "ACTIVE", "PENDING_CANCELLATION")


def _fmt(value: Decimal) -> str:
    """Decimal as NiceHash writes it: plain digits, no exponent."""
    text = format(value.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def _sat(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.00000001"), ROUND_UP)


@dataclass
class SimMarketConfig:
    key: str = "sim-key"
    secret: str = "sim-secret"
    org: str = "sim-org"
    market: str = "EU"
    algorithm: str = "SHA256ASICBOOST"
    market_price: Decimal = Decimal("0.0005")  # BTC per (marketFactor H/s) per day the book pays
    available_hs: float = 1e9  # what the book says is for sale
    activation_delay_s: float = 0.3  # PENDING -> ACTIVE
    rig_difficulty: float = 2**-22  # what the pool the rigs dial sets (sizes the fleet)
    rig_share_interval: float = 1.0
    time_scale: float = 1.0  # market seconds per real second, for spend
    price_down_cooldown_s: float = 600.0  # real seconds between price decreases (5061)
    limit_cooldown_s: float = 0.0  # real seconds between limit changes (5110); 0 = any time
    min_amount: Decimal = Decimal("0.001")
    min_limit: Decimal = Decimal("1")  # H/s
    max_limit: Decimal = Decimal("1000000000")
    price_down_step: Decimal = Decimal("-0.0001")
    max_skew_s: float = 300.0  # X-Time window
    tick_s: float = 0.1

    @property
    def rig_hashrate_hs(self) -> float:
        return self.rig_difficulty * HASHES_PER_DIFF1 / self.rig_share_interval


@dataclass
class SimPoolEntry:
    id: str
    name: str
    host: str
    port: int
    username: str
    password: str


@dataclass
class SimOrder:
    id: str
    pool: SimPoolEntry
    price: Decimal
    limit: Decimal
    amount: Decimal
    created: float  # wall
    activate_at: float  # loop time
    state: str = "PENDING"
    spent: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    delivered_hs: float = 0.0
    last_price_change: float = -1e18
    last_limit_change: float = -1e18
    fleets: list[RigFleet | EthRigFleet] = field(default_factory=list)
    starting: int = 0

    @property
    def available(self) -> Decimal:
        return max(self.amount - self.spent - self.refunded, Decimal(0))

    def rigs_working(self) -> int:
        return sum(1 for f in self.fleets for r in f.rigs if r.authorized and r.job is not None)


@dataclass
class _Fault:
    status: int
    count: int
    method: str | None
    path_contains: str | None
    code: int | None = None
    message: str = ""
    retry_after: float | None = None
    after: bool = False  # execute the request, then answer the error (a lost answer)
