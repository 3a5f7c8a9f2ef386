"""The backfill controller driven by the whole farm: one order for all instances.

Delivered = the sum over the instances that answered their last poll of each one's accepted
share difficulty over ``rental.window_s`` (the definition one proxy uses, per instance).  An
instance that stops answering drops out of the sum: its rigs may be gone, and counting its
last figure would hide exactly the deficit the backfill is for.  While any answering instance
has not been watched for a full window yet the farm's hashrate is unknown (None), and the
controller never orders on an unknown.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..rental.controller import BackfillController
from ..rental.local import WindowedHashrate, build_provider, destination_for, reading_from
from ..rental.policy import HashpriceReading

log = logging.getLogger("proxy.farm.rental")


class FarmHashrate:
    """Per-instance windowed hashrate from the polled ``accepted_difficulty`` of its pools."""

    def __init__(self, farm: Any, window_s: float, sample_s: float) -> None:
        self.farm = farm
        self.meters = {
            inst.name: WindowedHashrate(lambda inst=inst: _accepted_difficulty(inst), window_s,
                                        sample_s=sample_s)
            for inst in farm.instances
        }

    def sample(self) -> None:
        """After each poll: record every answering instance's counter."""
        for inst in self.farm.instances:
            if inst.up:
                self.meters[inst.name].sample()

    async def __call__(self) -> float | None:
        up = [inst for inst in self.farm.instances if inst.up]
        if not up:
            return None
        rates = [self.meters[inst.name].rate() for inst in up]
        if any(rate is None for rate in rates):
            return None
        return float(sum(rates))  # type: ignore[arg-type]


def _accepted_difficulty(inst: Any) -> float:
    return float(sum(p.get("accepted_difficulty") or 0.0 for p in inst.pools))


def farm_hashprice(farm: Any) -> HashpriceReading:
    """The hashprice the first answering instance reads from its active pool's jobs."""
    readings = [reading_from((inst.status or {}).get("hashprice")) for inst in farm.instances if inst.up]
    return next((r for r in readings if r.value is not None),
                readings[0] if readings else HashpriceReading(None, "no instance answering"))


async def start_farm_rental(farm: Any, provider: Any = None) -> tuple[BackfillController, FarmHashrate]:
    config = farm.config
    rental = config.rental
    destination, via_farm = destination_for(config, 0)
    meter = FarmHashrate(farm, rental.window_s, sample_s=min(farm.config.farm.poll_s, rental.window_s / 4))

    def sink(kind: str, reason: str, **fields: Any) -> None:
        farm.events.emit(kind, time.time(), instance=config.farm.name, reason=reason, **fields)

    controller = BackfillController(rental, provider or build_provider(rental), meter, rental.ledger,
                                    destination, events=sink, rented_in_source=via_farm,
                                    hashprice=lambda: farm_hashprice(farm))
    await controller.start()
    log.info("farm rental: backfill to %s %s:%d for %d instances, target %s", destination.name,
             destination.host, destination.port, len(farm.instances), rental.target_hashrate)
    return controller, meter
