"""One GPU port for both Ethereum dialects: the rig's first request says which it speaks.

A listener of ``protocol = "eth"`` has two cores: ``EthCore`` over its EthereumStratum/1.0.0
pools and ``EthProxyCore`` over its getwork-dialect pools (each failing over among its
own pools: the dialects cannot be mixed, see ``ethproxy_core``).  This router offers the
glue the cores' entry points (``rig_connected``, ``rig_data``, ``rig_closed``): it holds a
new connection's bytes until its first line, picks the core by that line's method
(``eth_submitLogin`` / ``eth_getWork`` / ``eth_submitWork``: the getwork dialect; anything
else: EthereumStratum), and hands the connection and the bytes to that core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..stratum import messages
from ..stratum.ethstratum import LEGACY_METHODS
from ..stratum.messages import BadMessage


class PendingRig:
    """A connection whose dialect is not known yet, then the session its core made."""

    __slots__ = ("peer", "send", "close", "buffer", "core", "session", "closed")

    def __init__(self, peer: str, send: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self.peer = peer
        self.send = send
        self.close = close
        self.buffer = b""
        self.core: Any = None
        self.session: Any = None
        self.closed = False


class DialectRouter:
    """Routes each rig connection to the core of its dialect (see the module docstring)."""

    __slots__ = ("stratum", "getwork", "max_line", "counts")

    def __init__(self, stratum: Any, getwork: Any, max_line: int) -> None:
        self.stratum = stratum  # EthCore, or None when the listener has no such pools
        self.getwork = getwork  # EthProxyCore, or None
        self.max_line = max_line
        self.counts = {"ethstratum": 0, "ethproxy": 0}

    def rig_connected(self, peer: str, send: Callable[[bytes], None], close: Callable[[], None],
                      now: float) -> PendingRig:
        """A rig's transport is up; its session starts with its first line."""
        return PendingRig(peer, send, close)

    def rig_data(self, rig: PendingRig, data: bytes, now: float) -> None:
        """Bytes from a rig: held until the first line picks its core, then passed on."""
        if rig.closed:
            return
        if rig.session is not None:
            rig.core.rig_data(rig.session, data, now)
            return
        rig.buffer += data
        newline = rig.buffer.find(b"\n")
        if newline < 0 and len(rig.buffer) <= self.max_line:
            return
        getwork = self._method(rig.buffer[:newline] if newline >= 0 else b"") in LEGACY_METHODS
        core = (self.getwork if getwork else self.stratum) or self.stratum or self.getwork
        self.counts["ethproxy" if core is self.getwork else "ethstratum"] += 1
        rig.core = core
        rig.session = core.rig_connected(rig.peer, rig.send, rig.close, now)
        buffered, rig.buffer = rig.buffer, b""
        core.rig_data(rig.session, buffered, now)

    @staticmethod
    def _method(line: bytes) -> str:
        try:
            return messages.decode(line).method or ""
        except BadMessage:
            return ""  # the chosen core answers (or closes) it as it would any bad line

    def rig_closed(self, rig: PendingRig, now: float) -> None:
        """The transport is gone: the session (if any) is released by its core."""
        rig.closed = True
        if rig.session is not None:
            rig.core.rig_closed(rig.session, now)
