"""The farm's curtailments in etcd: one added through any instance's API reaches every
instance, each of which applies it to its own rigs (and the leader sums what each puts at
risk, ``proxy.cluster.power``).

Stored under ``/<farm>/curtailments/<id>`` as the JSON of ``POST /api/v1/power/curtailments``
(no lease: a curtailment outlives the instance that took it).  Every instance reads the prefix
on each beat and hands it to its power monitor (``PowerMonitor.set_farm_curtailments``);
when etcd does not answer, the last ones read stay applied.  A write is validated by the
instance that takes it first (400 naming the field), then written (503 with the reason when
etcd does not take it: nothing changed anywhere).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from ..power.monitor import KEEP_OVER_S, CurtailmentError, stored_curtailment
from .etcd import EtcdError

log = logging.getLogger("proxy.cluster.curtail")


class FarmCurtailments:
    """``node``: the instance's ``ClusterNode`` (its etcd client and key prefix)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.prefix = node.key("curtailments", "")

    @property
    def monitor(self) -> Any:
        return getattr(self.node.service, "power", None)

    async def load(self) -> None:
        """Read the farm's curtailments and apply them here (each beat)."""
        kvs, _ = await self.node.etcd.range(self.prefix, prefix=True)
        stored: dict[str, dict[str, Any]] = {}
        for kv in kvs:
            with contextlib.suppress(ValueError):
                raw = json.loads(kv.value)
                if isinstance(raw, dict):
                    stored[kv.key[len(self.prefix):]] = raw
        if self.monitor is not None:
            self.monitor.set_farm_curtailments(stored)

    async def add(self, body: Any) -> dict[str, Any]:
        """Validate (``CurtailmentError``), write to etcd (``EtcdError``), apply here at once."""
        monitor = self.monitor
        item = monitor.check_curtailment(body, source="farm")
        await self.node.etcd.put(self.prefix + item.id, json.dumps(stored_curtailment(item)))
        with contextlib.suppress(EtcdError):  # the next beat applies it in any case
            await self.load()
            await self._prune()
        return monitor.curtailment_view(monitor.curtailments.get(item.id, item))

    async def remove(self, cid: str) -> bool:
        """Delete one the farm holds (``EtcdError`` when etcd does not take it)."""
        if "/" in cid or not cid:
            return False
        if await self.node.etcd.get(self.prefix + cid) is None:
            return False
        await self.node.etcd.delete(self.prefix + cid)
        with contextlib.suppress(EtcdError):
            await self.load()
        return True

    async def _prune(self) -> None:
        """Windows over for longer than the monitor keeps listing them are deleted."""
        monitor = self.monitor
        now = monitor.wall()
        for cid, c in list(monitor.curtailments.items()):
            if c.source == "farm" and c.until < now - KEEP_OVER_S:
                await self.node.etcd.delete(self.prefix + cid)


def refused(exc: Exception) -> str:
    """The API's 503 text for a farm curtailment write etcd did not take."""
    return (f"etcd did not take the curtailment change ({exc}); nothing was changed on any "
            "instance, try again when etcd answers")


__all__ = ["CurtailmentError", "FarmCurtailments", "refused"]
