"""The farm's one backfill controller, run by whichever instance leads.

* ``ClusterHashrate``: delivered = the sum over the registered instances of each one's
  accepted share difficulty over ``rental.window_s``, read from the summaries they publish
  in etcd (each sample timed by its publisher's own clock).  An instance whose registration
  lapsed drops out of the sum (its rigs may be gone; counting its last figure would hide the
  very deficit the backfill is for); while any registered instance has not been watched for
  a full window the farm's hashrate is unknown and nothing is ordered.
* ``start_leader_rental``: on winning the election, load the ledger from etcd and start the
  controller with ``EtcdLedger`` and ``FencedProvider`` (see ``proxy.cluster.ledger``); its
  reconcile adopts the order (and the pending intents) the previous leader left.
  Its ``power`` is the node's ``ClusterPower`` (``proxy.cluster.power``): the members'
  published power plans summed, so a UPS feeding rigs on several instances is rented for
  whole, before the rigs go dark.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..rental.controller import BackfillController
from ..rental.local import WindowedHashrate, build_provider, destination_for, reading_from
from ..rental.policy import HashpriceReading
from .ledger import EtcdLedger, FencedProvider

log = logging.getLogger("proxy.cluster.rental")


class ClusterHashrate:
    """Per-instance windowed hashrate from the members' published ``accepted_difficulty``."""

    def __init__(self, node: Any, window_s: float, sample_s: float) -> None:
        self.node = node
        self.window_s = window_s
        self.sample_s = sample_s
        self.meters: dict[str, WindowedHashrate] = {}

    def sample(self) -> None:
        """After each read of the members: record every member's counter at its publish time."""
        members = self.node.members
        for name in list(self.meters):
            if name not in members:
                del self.meters[name]
        for name in members:
            meter = self.meters.get(name)
            if meter is None:
                meter = self.meters[name] = WindowedHashrate(
                    lambda n=name: float(self.node.members.get(n, {}).get("accepted_difficulty", 0.0)),
                    self.window_s, clock=lambda n=name: float(self.node.members.get(n, {}).get("time", 0.0)),
                    sample_s=self.sample_s)
            meter.sample()

    async def __call__(self) -> float | None:
        if not self.meters:
            return None
        rates = [m.rate() for m in self.meters.values()]
        if any(r is None for r in rates):
            return None
        return float(sum(rates))  # type: ignore[arg-type]


def members_hashprice(node: Any) -> HashpriceReading:
    """The hashprice the first member reporting one reads from its active pool's jobs."""
    readings = [reading_from(m.get("hashprice")) for m in node.members.values()]
    return next((r for r in readings if r.value is not None),
                readings[0] if readings else HashpriceReading(None, "no instance registered"))


async def start_leader_rental(node: Any, provider: Any = None) -> BackfillController:
    """The controller for this leader; the caller stops it on losing the lead."""
    service = node.service
    config = service.config
    rental = config.rental
    ledger = EtcdLedger(node.etcd, node.key("ledger"), node.key("leader"), lambda: node.election)
    rows = await ledger.load()
    destination, via_proxy = destination_for(config, service.port)
    fenced = FencedProvider(provider or build_provider(rental), ledger, node.leading)

    def sink(kind: str, reason: str, **fields: Any) -> None:
        service.events.emit(kind, time.time(), reason=reason, **fields)

    controller = BackfillController(rental, fenced, node.hashrate, "", destination, events=sink,
                                    rented_in_source=via_proxy, hashprice=lambda: members_hashprice(node),
                                    ledger=ledger, power=node.power)
    await controller.start()
    log.info("cluster rental: leading; ledger of %d rows loaded from etcd, backfill to %s %s:%d",
             rows, destination.name, destination.host, destination.port)
    return controller
