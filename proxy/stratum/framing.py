"""Newline-delimited JSON-RPC framing with a hard cap on line length.

A rig or pool that never sends a newline must not make us buffer without bound, so the
framer refuses any line longer than ``max_line`` bytes (the caller closes that peer).
"""

from __future__ import annotations

DEFAULT_MAX_LINE = 16 * 1024


class LineTooLong(ValueError):
    """The peer sent more than ``max_line`` bytes without a newline."""


class LineFramer:
    """Splits a byte stream into lines; keeps the unterminated tail for the next feed."""

    __slots__ = ("_buffer", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._buffer = b""
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete lines in ``buffer + data`` (without newlines, blanks skipped).

        Raises LineTooLong when a complete or pending line exceeds the cap.
        """
        if self._buffer:
            data = self._buffer + data
        elif data[-1:] == b"\n" and data.find(b"\n") == len(data) - 1:
            # the usual case, one whole line (a submit, a pool's answer): no split, no copy loop
            self._buffer = b""
            if len(data) > self.max_line + 1:
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            return [data[:-1]] if data.strip() else []
        if b"\n" not in data:
            if len(data) > self.max_line:
                self._buffer = b""
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            self._buffer = data
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        if len(tail) > self.max_line:
            self._buffer = b""
            raise LineTooLong(f"line longer than {self.max_line} bytes")
        self._buffer = tail
        lines = []
        for part in parts:
            if len(part) > self.max_line:
                self._buffer = b""
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            if part.strip():
                lines.append(part)
        return lines

    @property
    def pending(self) -> int:
        """Bytes buffered waiting for a newline."""
        return len(self._buffer)
