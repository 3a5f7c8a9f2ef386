"""Who may connect: the total and per-address limits, and the time a rig has to introduce
itself (subscribe and authorize) before its connection is taken back."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import ProxySection
    from .rig import RigSession


class Admission:
    """Refuses rigs over the connection limits and times out those that never finish their handshake."""

    __slots__ = ("settings", "per_address", "auth_deadlines")

    def __init__(self, settings: ProxySection) -> None:
        self.settings = settings
        self.per_address: dict[str, int] = {}
        self.auth_deadlines: deque[tuple[float, RigSession]] = deque()

    def admit(self, rig: RigSession, rigs_now: int, now: float) -> str:
        """Empty to let the rig in, else why it is refused (the caller closes it)."""
        s = self.settings
        count = self.per_address.get(rig.address, 0) + 1
        self.per_address[rig.address] = count
        if rigs_now > s.max_rigs:
            return f"over the limit of {s.max_rigs} rigs"
        if s.max_rigs_per_address and count > s.max_rigs_per_address:
            return f"over {s.max_rigs_per_address} connections from {rig.address}"
        self.auth_deadlines.append((now + s.auth_timeout_s, rig))
        return ""

    def release(self, rig: RigSession) -> None:
        """Give back the rig's per-address slot; call once when its connection closes."""
        left = self.per_address.get(rig.address, 1) - 1
        if left > 0:
            self.per_address[rig.address] = left
        else:
            self.per_address.pop(rig.address, None)

    def overdue(self, now: float) -> list[RigSession]:
        """Rigs still open past their deadline without having subscribed and authorized."""
        late = []
        while self.auth_deadlines and self.auth_deadlines[0][0] <= now:
            rig = self.auth_deadlines.popleft()[1]
            if not rig.closed and not (rig.subscribed and rig.authorized):
                late.append(rig)
        return late

    def next_deadline(self) -> float | None:
        """The earliest handshake deadline still queued, so the timers know when to wake; None if none."""
        return self.auth_deadlines[0][0] if self.auth_deadlines else None
