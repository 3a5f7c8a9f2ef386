"""The coinbase transaction of a pool's job: what the block pays, from coinb1 and coinb2.

A pool's job carries its coinbase in two halves around the extranonce:
``coinb1 + extranonce1 + extranonce2 + coinb2``.  With a zero extranonce of the pool's size
in the middle (its bytes never change the outputs) the whole transaction is parsed:
version, the segwit marker and flag if present, the inputs (previous output, script length
as a varint, script, sequence), the outputs (8-byte value, varint script length, script),
the witness if flagged, and the locktime, with nothing left over.  The block's value is the
sum of the output values: subsidy plus fees, whatever the pool's template pays out.

``parse_coinbase`` never raises for any bytes: a transaction that does not parse gives a
``Coinbase`` whose ``value_sat`` is None and whose ``reason`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_MONEY_SAT", "Coinbase", "coinbase_from_job", "parse_coinbase"]

MAX_MONEY_SAT = 21_000_000 * 100_000_000
NULL_PREVOUT = b"\x00" * 32 + b"\xff\xff\xff\xff"
MAX_EXTRANONCE = 256  # extranonce1 + extranonce2 bytes; real pools use 4..24


@dataclass(frozen=True, slots=True)
class Coinbase:
    """A parsed coinbase: its outputs (value in satoshi, script) and their sum, or the reason
    it could not be read (then ``value_sat`` is None and ``outputs`` is empty)."""

    value_sat: int | None
    outputs: tuple[tuple[int, bytes], ...] = ()
    segwit: bool = False
    reason: str = ""


class _Malformed(Exception):
    """Why the bytes are not a coinbase transaction (caught inside this module only)."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise _Malformed(f"truncated at byte {self.pos}: {what} needs {n} bytes, "
                             f"{len(self.data) - self.pos} left")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "little")

    def varint(self, what: str) -> int:
        first = self.uint(1, what)
        if first < 0xFD:
            return first
        return self.uint({0xFD: 2, 0xFE: 4, 0xFF: 8}[first], what)


def _script_bytes(r: _Reader, what: str) -> bytes:
    return r.take(r.varint(f"{what} length"), what)


def parse_coinbase(tx: bytes, extranonce_at: tuple[int, int] | None = None) -> Coinbase:
    """Parse a whole coinbase transaction.  ``extranonce_at`` = (offset, size): the bytes the
    miner fills in, which must lie inside the input's script (else the split was wrong)."""
    try:
        return _parse(tx, extranonce_at)
    except _Malformed as exc:
        return Coinbase(None, reason=str(exc))


def _parse(tx: bytes, extranonce_at: tuple[int, int] | None) -> Coinbase:
    r = _Reader(tx)
    r.take(4, "version")
    segwit = len(tx) > r.pos + 1 and tx[r.pos] == 0 and tx[r.pos + 1] == 1
    if segwit:
        r.pos += 2
    if (inputs := r.varint("input count")) != 1:
        raise _Malformed(f"a coinbase has exactly one input, this has {inputs}")
    if r.take(36, "previous output") != NULL_PREVOUT:
        raise _Malformed("the input spends a real output: not a coinbase")
    script_len = r.varint("input script length")
    script_start = r.pos
    r.take(script_len, "input script")
    if extranonce_at is not None:
        offset, size = extranonce_at
        if offset < script_start or offset + size > script_start + script_len:
            raise _Malformed(f"the extranonce (bytes {offset}..{offset + size}) is not inside the "
                             f"input script (bytes {script_start}..{script_start + script_len}): "
                             "coinb1/coinb2 do not split the coinbase there")
    r.take(4, "input sequence")
    count = r.varint("output count")
    if count == 0:
        raise _Malformed("no outputs")
    outputs = []
    total = 0
    for i in range(count):
        value = r.uint(8, f"output {i} value")
        if value > MAX_MONEY_SAT:
            raise _Malformed(f"output {i} pays {value} sat, more than 21 million BTC")
        total += value
        outputs.append((value, _script_bytes(r, f"output {i} script")))
    if total > MAX_MONEY_SAT:
        raise _Malformed(f"outputs sum to {total} sat, more than 21 million BTC")
    if segwit:
        for item in range(r.varint("witness item count")):
            _script_bytes(r, f"witness item {item}")
    r.take(4, "locktime")
    if r.pos != len(tx):
        raise _Malformed(f"{len(tx) - r.pos} bytes after the locktime")
    return Coinbase(total, tuple(outputs), segwit)


def coinbase_from_job(coinb1: bytes, coinb2: bytes, extranonce_size: int) -> Coinbase:
    """The coinbase a job pays out: coinb1 + ``extranonce_size`` zero bytes + coinb2 parsed."""
    if not 0 <= extranonce_size <= MAX_EXTRANONCE:
        return Coinbase(None, reason=f"extranonce size {extranonce_size} outside 0..{MAX_EXTRANONCE}")
    tx = coinb1 + bytes(extranonce_size) + coinb2
    return parse_coinbase(tx, (len(coinb1), extranonce_size))
