"""Glue between one proxy (``ProxyService``) and the backfill controller.

* ``WindowedHashrate``: the delivered hashrate of this proxy, measured as the difficulty the
  pools accepted over the last ``window_s`` (DESIGN.md: "delivered hashrate measured from
  accepted share difficulty over a window"), summed over every pool: the farm's output
  wherever failover has put it.  ``None`` until a full window has been seen, so a fresh
  start never looks like a deficit.
* ``core_hashprice``: what the farm's hashrate earns, the active pool's hashprice as the
  core reads it from that pool's jobs (``CoreView.hashprice``); with ``max_price =
  "hashprice"`` it is the price cap.
* ``start_for_service``: build the provider from ``[rental]`` (credentials from the
  environment), the destination (a ``[[pools]]`` entry, or ``"@proxy"``: the proxy's own rig
  port as ``public_address``, in which case the rented rigs are part of the measurement),
  and an event sink into the core's event log; start the controller.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..config import RENTAL_PROXY_TARGET, ConfigError, parse_address
from .controller import BackfillController
from .nicehash import NiceHashProvider
from .policy import HashpriceReading
from .provider import Destination

log = logging.getLogger("proxy.rental")

HASHES_PER_DIFF1 = 2**32

__all__ = ["WindowedHashrate", "build_provider", "core_hashprice", "destination_for", "reading_from",
           "start_for_service"]


class WindowedHashrate:
    """H/s from a cumulative accepted-difficulty counter, over a sliding window."""

    def __init__(
        self,
        read_total: Callable[[], float],
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        sample_s: float = 1.0,
    ) -> None:
        self.read_total = read_total
        self.window_s = window_s
        self.clock = clock
        self.sample_s = min(sample_s, window_s / 4)
        self.samples: deque[tuple[float, float]] = deque()

    def sample(self) -> None:
        """Record the counter now (call it often: the controller does each step, the service each second)."""
        now, total = self.clock(), float(self.read_total())
        if self.samples and total < self.samples[-1][1]:
            self.samples.clear()  # a pool was removed by a reload: start the window again
        if len(self.samples) < 2 or now - self.samples[-2][0] >= self.sample_s:
            self.samples.append((now, total))
        else:
            self.samples[-1] = (now, total)  # keep one sample per sample_s, the latest value
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < self.window_s * 0.999:
            return None
        return (d1 - d0) * HASHES_PER_DIFF1 / (t1 - t0)

    async def __call__(self) -> float | None:
        self.sample()
        return self.rate()


def core_accepted_difficulty(service: Any) -> float:
    view = service.view
    return 0.0 if view is None else view.accepted_difficulty()


# the Ethash family: GPU rigs on the GPU listeners (EthereumStratum/1.0.0)
ETHASH_ALGORITHMS = frozenset({"DAGGERHASHIMOTO", "ETCHASH", "ETHASH"})


def gpu_accepted_difficulty(service: Any) -> float:
    """What the GPU listeners' pools accepted (NiceHash's Ethash difficulty 1 ~ 2^32 hashes)."""
    return sum(g.view.accepted_difficulty() for g in getattr(service, "gpu", {}).values() if g.view)


def reading_from(figures: dict[str, Any] | None) -> HashpriceReading:
    """A hashprice view (``/api/v1/status`` ``hashprice``) as the controller reads it."""
    if not figures:
        return HashpriceReading(None, "no hashprice figures yet")
    value = figures.get("btc_per_ph_day")
    if value is None:
        return HashpriceReading(None, str(figures.get("reason") or "unknown"), figures.get("pool"))
    return HashpriceReading(Decimal(repr(float(value))), "", figures.get("pool"))


def core_hashprice(service: Any) -> HashpriceReading:
    view = service.view
    if view is None:
        return HashpriceReading(None, "the proxy core is not running")
    return reading_from(view.hashprice(service.now()))


def destination_for(config: Any, rig_port: int) -> tuple[Destination, bool]:
    """Where rented hashpower goes, and whether it then passes through this proxy."""
    r = config.rental
    if r.pool == RENTAL_PROXY_TARGET:
        host, port = parse_address(r.public_address, "rental.public_address")
        return Destination("stratum-proxy", host, port or rig_port, r.worker, "x"), True
    pool = next(p for p in config.pools if p.name == r.pool)
    host, port = pool.endpoint
    return Destination(pool.name, host, port, pool.user, pool.password), False


def build_provider(rental: Any) -> NiceHashProvider:
    """The marketplace client; credentials from the environment (names in the config)."""
    values = {
        name: os.environ.get(getattr(rental, name), "") for name in ("key_env", "secret_env", "org_env")
    }
    missing = [getattr(rental, n) for n, v in values.items() if not v]
    if missing and rental.provider == "sim":
        defaults = {"key_env": "sim-key", "secret_env": "sim-secret", "org_env": "sim-org"}
        values = {n: v or defaults[n] for n, v in values.items()}
    elif missing:
        raise ConfigError(
            f"rental: environment variable(s) {', '.join(missing)} not set "
            "(the marketplace credentials come from the environment)"
        )
    return NiceHashProvider(
        rental.api_url,
        values["key_env"],
        values["secret_env"],
        values["org_env"],
        market=rental.market,
        algorithm=rental.algorithm,
    )


async def start_for_service(service: Any, provider: Any = None) -> BackfillController:
    """Start the backfill controller for one proxy; ``await controller.stop()`` stops it."""
    config = service.config
    rental = config.rental
    destination, via_proxy = destination_for(config, service.port)
    gpu = rental.algorithm.upper() in ETHASH_ALGORITHMS  # GPU rigs: measured on the GPU listeners
    accepted = gpu_accepted_difficulty if gpu else core_accepted_difficulty
    meter = WindowedHashrate(
        lambda: accepted(service), rental.window_s, sample_s=min(1.0, rental.interval_s)
    )

    def sink(kind: str, reason: str, **fields: Any) -> None:
        service.events.emit(kind, time.time(), reason=reason, **fields)

    controller = BackfillController(
        rental,
        provider or build_provider(rental),
        meter,
        rental.ledger,
        destination,
        events=sink,
        rented_in_source=via_proxy,
        hashprice=lambda: core_hashprice(service),
        power=getattr(service, "power", None),  # UPSes and curtailments ([power], proxy/power)
    )
    await controller.start()
    log.info(
        "rental: backfill to %s %s:%d, target %s, provider %s",
        destination.name,
        destination.host,
        destination.port,
        rental.target_hashrate,
        rental.provider,
    )
    return controller
