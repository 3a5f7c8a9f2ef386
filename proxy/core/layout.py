"""The rigs' extranonce layout, chosen from the pools by default.

Every rig's subscribe answer fixes its extranonce1 (a prefix of P bytes) and its
extranonce2_size (E) for the life of its connection, and the fold needs
``P + E <= extranonce2_size`` of every pool the rig may be moved to.  With
``extranonce_prefix_size`` and ``extranonce2_size`` set to "auto" (the default) the proxy
learns each enabled pool's extranonce2_size first (rigs' subscribe answers wait for it,
``layout_wait_s`` at most; sizes seen before a restart count too, so a restart with a pool
down still knows it) and takes the widest layout that fits all of them with E between 3
and 8: 2 + 4 when every pool gives >= 6 (65,536 rigs per upstream connection), 1 + 4 for
5, 1 + 3 for 4 (256 rigs per connection), 0 + 3 for 3 (one connection per rig).  A pool
that later turns out narrower takes the existing path (``mining.set_extranonce`` or
``client.reconnect``), with an event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import ProxySection

DEFAULT_LAYOUT = (2, 4)  # when nothing is known: the widest; a narrower pool is then narrow


def choose(sizes: Iterable[int]) -> tuple[int, int]:
    """(prefix bytes, rigs' extranonce2_size) for pools of these extranonce2 sizes."""
    smallest = min(sizes, default=None)
    if smallest is None or smallest >= 6:
        return DEFAULT_LAYOUT
    if smallest == 5:
        return 1, 4
    if smallest == 4:
        return 1, 3
    return 0, 3


class Layout:
    """The layout in force (or not yet), and why."""

    __slots__ = ("auto", "prefix_size", "e2_size", "reason", "deadline", "seen", "remembered")

    def __init__(self, settings: ProxySection, remembered: dict[str, int], now: float) -> None:
        self.auto = settings.extranonce_prefix_size == "auto" or settings.extranonce2_size == "auto"
        self.seen: dict[str, int] = {}  # pool -> extranonce2_size, from this run
        self.remembered = dict(remembered)  # from before the last restart
        self.deadline = now + settings.layout_wait_s
        self.prefix_size: int | None = None
        self.e2_size: int | None = None
        self.reason = "waiting for the pools' extranonce2_size"
        if not self.auto:
            self.prefix_size = int(settings.extranonce_prefix_size)
            self.e2_size = int(settings.extranonce2_size)
            self.reason = "configured (extranonce_prefix_size, extranonce2_size)"

    @property
    def decided(self) -> bool:
        """Rigs can be answered: every subscribe answer uses this layout from now on."""
        return self.prefix_size is not None

    def learn(self, pool: str, e2_size: int) -> bool:
        """A pool told its size; True when it is new or changed (worth remembering).  Every
        connection of a pool tells it: with one connection per rig that is 10,000 times in a
        failover, and only a size not known yet (this run, or else from before the restart)
        is news."""
        before = self.seen.get(pool)
        self.seen[pool] = e2_size
        if before is not None:
            return before != e2_size
        return self.remembered.get(pool) != e2_size

    def complete(self, pools: Iterable[str]) -> bool:
        """Every one of these (enabled) pools has told its size in this run."""
        return all(name in self.seen for name in pools)

    def decide(self, pools: Iterable[str], waited: bool) -> None:
        """Fix the layout from what the pools said (and, past the wait, what was remembered)."""
        names = list(pools)
        known = {n: self.seen.get(n, self.remembered.get(n)) for n in names}
        sizes = {n: v for n, v in known.items() if v is not None}
        self.prefix_size, self.e2_size = choose(sizes.values())
        if not sizes:
            self.reason = ("no pool's extranonce2_size known after layout_wait_s: the default "
                           f"{self.prefix_size} + {self.e2_size}")
            return
        smallest = min(sizes.values())
        narrowest = ", ".join(sorted(n for n, v in sizes.items() if v == smallest))
        unheard = sorted(n for n in names if n not in self.seen)
        self.reason = (f"auto: the pools' smallest extranonce2_size is {smallest} ({narrowest}), "
                       f"so {self.prefix_size}-byte prefix + extranonce2_size {self.e2_size}")
        if unheard:
            self.reason += (f"; not heard within layout_wait_s: {', '.join(unheard)}"
                            + (" (sizes remembered from before the restart)" if waited else ""))

    def view(self) -> dict[str, object]:
        """The layout in force and why, for /api/v1/status."""
        return {"prefix_size": self.prefix_size, "extranonce2_size": self.e2_size,
                "auto": self.auto, "decided": self.decided, "reason": self.reason,
                "pools": dict(self.seen)}
