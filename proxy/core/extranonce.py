"""Proxy-chosen extranonce1 prefixes for rigs.

A rig's prefix is fixed for its life and must be unique among the rigs sharing one
upstream connection.  Prefixes are kept unique proxy-wide while the space lasts, so rigs
can be regrouped onto any pool's connections after a switch without collisions; past that
they are handed out round-robin and the placement recruits extra upstream connections.
"""

from __future__ import annotations


class PrefixAllocator:
    """Hands out the per-rig extranonce1 prefixes that let many rigs share one pool connection."""

    __slots__ = ("size", "_space", "_next", "_free", "_in_use", "_start")

    def __init__(self, size: int, start: int = 0) -> None:
        if not 0 <= size <= 4:
            raise ValueError("prefix size must be 0..4 bytes")
        self.size = size
        self._space = 256**size
        self._start = start % self._space
        self._next = 0
        self._free: list[int] = []
        self._in_use: dict[int, int] = {}

    @property
    def capacity(self) -> int:
        """How many rigs can hold distinct prefixes."""
        return self._space if self.size else 1

    def allocate(self) -> bytes:
        """A prefix for a new rig: freed ones first, then unused ones, then shared round-robin
        once the space is exhausted."""
        if self.size == 0:
            return b""
        if self._free:
            value = self._free.pop()
        elif self._next < self._space:
            value = (self._start + self._next) % self._space
            self._next += 1
        else:
            # Space exhausted: share prefixes round-robin; placement keeps them apart.
            value = (self._start + self._next) % self._space
            self._next += 1
        self._in_use[value] = self._in_use.get(value, 0) + 1
        return value.to_bytes(self.size, "big")

    def release(self, prefix: bytes) -> None:
        """Return a rig's prefix when it closes; it is reused only once no rig holds it."""
        if self.size == 0:
            return
        value = int.from_bytes(prefix, "big")
        count = self._in_use.get(value, 0)
        if count <= 1:
            self._in_use.pop(value, None)
            if count == 1:
                self._free.append(value)
        else:
            self._in_use[value] = count - 1

    @property
    def in_use(self) -> int:
        """Prefixes held by rigs, counting a shared one once per holder."""
        return sum(self._in_use.values())
