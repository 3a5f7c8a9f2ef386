"""A rig's handshake: the answers that fix its extranonce layout and version mask for life.

A rig's extranonce1 and extranonce2_size are fixed by its subscribe answer, so the answer
must fit the pool the rig will mine on.  Under the fold every rig gets its proxy prefix and
the proxy's extranonce2_size; on a pool too narrow for the fold it gets that pool's own
extranonce on a connection of its own.  So a subscribe that arrives before any pool is
usable is held (up to ``layout_wait_s``), and one headed for a narrow pool is answered when
its connection is ready, exactly once either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..stratum import errors
from ..stratum.errors import StratumError
from .rig_base import RigState
from .rig_requests import AuthorizeRequest, ConfigureRequest, SubscribeRequest

if TYPE_CHECKING:
    from .coordinator import ProxyCore
    from .pool import PoolState
    from .rig import RigSession

DEFAULT_VERSION_MASK = 0x1FFFE000  # BIP320 general-purpose bits, before any pool is known


class Handshake:
    """Answers subscribe, authorize and configure for every rig of one core."""

    __slots__ = ("core", "held")

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.held: dict[RigSession, float] = {}  # rigs whose subscribe answer waits, by deadline

    def subscribe(self, rig: RigSession, request: SubscribeRequest, now: float) -> None:
        """Answer a subscribe now if a pool is usable, else hold it until one is (or its
        deadline); a repeat gets the same layout."""
        core = self.core
        msg = request.msg
        if rig.subscribe_held is not None:
            raise StratumError(errors.OTHER, "a subscribe is already waiting for its answer")
        if rig.subscribed:  # again: the same layout, it cannot change
            rig.answer_subscribe(msg.id, rig.extranonce1, rig.extranonce2_size)
            return
        rig.subscribe_held = msg.id
        group = core.group()
        if not group or not core.layout.decided:
            self._hold(rig, now)  # answered when the layout is chosen and a pool is up
            return
        self._answer(rig, group, now)

    def _prefix(self, rig: RigSession) -> None:
        """The rig's prefix, allocated once the layout is known (its size depends on it)."""
        if not rig.has_prefix:
            rig.prefix = self.core.prefixes.allocate()
            rig.has_prefix = True

    def _answer(self, rig: RigSession, group: list[PoolState], now: float) -> None:
        core = self.core
        self._prefix(rig)
        target = core.router.pick(group)
        if target is not None and target.narrow:
            # its own connection with that pool's extranonce: the answer waits for it
            self._hold(rig, now)
            core.place(rig, target, now)
            if rig.subscribe_held is None:
                self.held.pop(rig, None)  # the connection was ready: answered by the handover
            return
        self.held.pop(rig, None)
        rig.answer_subscribe(rig.subscribe_held, rig.prefix, core.e2_size)
        self._maybe_place(rig, now)

    def _hold(self, rig: RigSession, now: float) -> None:
        deadline = self.held[rig] = now + self.core.settings.layout_wait_s
        self.core.timers.due(deadline)

    def release(self, now: float, expired_only: bool = False) -> None:
        """Answer the held subscribes that can be answered: all of them once a pool is
        usable, and those past their deadline in any case (with the proxy's layout)."""
        core = self.core
        if not self.held or not core.layout.decided:
            return
        group = core.group()
        for rig, deadline in list(self.held.items()):
            if rig.subscribe_held is None or rig.closed:
                self.held.pop(rig, None)
            elif now >= deadline:
                self.held.pop(rig, None)
                self._prefix(rig)
                rig.answer_subscribe(rig.subscribe_held, rig.prefix, core.e2_size)
                self._maybe_place(rig, now)
            elif group and not expired_only and rig.conn is None:
                self._answer(rig, group, now)

    def next_deadline(self) -> float | None:
        """When the earliest held subscribe must be answered anyway; None if none is held."""
        return min(self.held.values()) if self.held else None

    def authorize(self, rig: RigSession, request: AuthorizeRequest, now: float) -> None:
        """A rig's first authorized worker may complete its handshake: place it if it is now active."""
        if request.first:
            self._maybe_place(rig, now)

    def _maybe_place(self, rig: RigSession, now: float) -> None:
        if rig.state is RigState.ACTIVE and rig.conn is None:
            core = self.core
            core.placement.activated(rig)
            pool = core.router.pick(core.group())
            if pool is not None:
                core.place(rig, pool, now)

    def configure(self, rig: RigSession, request: ConfigureRequest) -> None:
        """Answer mining.configure: version rolling within the pool's mask, every other extension refused."""
        params = request.msg.params or []
        result: dict[str, Any] = {}
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        for ext in params[0]:
            if ext == "version-rolling" and request.requested_mask is not None:
                rig.version_mask = request.requested_mask & self._pool_mask(rig)
                result["version-rolling"] = True
                result["version-rolling.mask"] = f"{rig.version_mask:08x}"
            elif ext == "minimum-difficulty":
                # honoured: a floor of the rig's own difficulty (never above the pool's)
                value = options.get("minimum-difficulty.value")
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
                if ok:
                    rig.vardiff.minimum = float(value)
                result["minimum-difficulty"] = ok
            elif ext == "subscribe-extranonce":
                rig.extranonce_subscribed = True  # as mining.extranonce.subscribe
                result["subscribe-extranonce"] = True
            elif isinstance(ext, str):
                result[ext[:64]] = False
        rig.reply(request.msg, result)

    def _pool_mask(self, rig: RigSession) -> int:
        """The mask of the pool the rig is on (or will be put on)."""
        conn = rig.conn
        if conn is None:
            for pool in self.core.group():
                conn = pool.first_ready()
                if conn is not None:
                    break
        if conn is not None and conn.version_mask is not None:
            return conn.version_mask
        if conn is not None and conn.subscribed:
            return 0
        return DEFAULT_VERSION_MASK

    def forget(self, rig: RigSession) -> None:
        """Drop a closed rig's held subscribe so it is never answered."""
        self.held.pop(rig, None)
