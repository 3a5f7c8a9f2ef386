"""The work maths: coinbase, merkle root, 80-byte header, double-SHA256, difficulty.

Byte orders follow what pools put on the wire (see shared/vectors/README.md):
prevhash is the header's 32 bytes with each 4-byte word reversed; version, nbits, ntime and
nonce are big-endian hex of numbers stored little-endian in the header; merkle branch
hashes are raw double-SHA256 output.
"""

from __future__ import annotations

import hashlib
import struct
from fractions import Fraction

DIFF1_TARGET = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1
_sha256 = hashlib.sha256
_pack_u32 = struct.Struct("<I").pack


def dsha256(data: bytes) -> bytes:
    return _sha256(_sha256(data).digest()).digest()


def prevhash_to_header(prevhash_wire: bytes) -> bytes:
    """Undo the per-word byte swap pools apply to prevhash."""
    return b"".join(prevhash_wire[i:i + 4][::-1] for i in range(0, 32, 4))


def merkle_root(coinbase_hash: bytes, branch: list[bytes]) -> bytes:
    root = coinbase_hash
    for h in branch:
        root = _sha256(_sha256(root + h).digest()).digest()
    return root


def build_header(version: int, prevhash_header: bytes, merkle: bytes, ntime: int, nbits: int,
                 nonce: int) -> bytes:
    return (
        _pack_u32(version) + prevhash_header + merkle + _pack_u32(ntime) + _pack_u32(nbits)
        + _pack_u32(nonce)
    )


def hash_to_int(digest: bytes) -> int:
    """A header hash as the number compared against the target (little-endian)."""
    return int.from_bytes(digest, "little")


def block_hash_hex(digest: bytes) -> str:
    """The display form of a block hash (byte-reversed hex)."""
    return digest[::-1].hex()


def difficulty_to_target(difficulty: float) -> int:
    """Share target for a (possibly fractional) difficulty, exact for any float."""
    if difficulty <= 0:
        raise ValueError("difficulty must be positive")
    frac = Fraction(difficulty)
    target = DIFF1_TARGET * frac.denominator // frac.numerator
    return min(target, MAX_TARGET)


def target_to_difficulty(target: int) -> float:
    return DIFF1_TARGET / max(target, 1)


def hash_difficulty(hash_int: int) -> float:
    """The difficulty a hash achieves (how pools report share difficulty)."""
    return DIFF1_TARGET / max(hash_int, 1)


def nbits_to_target(nbits: int) -> int:
    exponent = nbits >> 24
    mantissa = nbits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def rolled_version(job_version: int, version_bits: int | None, mask: int) -> int:
    """BIP310: nVersion = (job_version & ~mask) | (version_bits & mask)."""
    if version_bits is None:
        return job_version
    return (job_version & ~mask & 0xFFFFFFFF) | (version_bits & mask)


def share_hash(coinb1: bytes, extranonce1: bytes, extranonce2: bytes, coinb2: bytes,
               branch: list[bytes], version: int, prevhash_wire: bytes, nbits: int, ntime: int,
               nonce: int) -> bytes:
    """Rebuild the header from notify + submit fields and return its double-SHA256."""
    coinbase_hash = dsha256(coinb1 + extranonce1 + extranonce2 + coinb2)
    root = merkle_root(coinbase_hash, branch)
    header = build_header(version, prevhash_to_header(prevhash_wire), root, ntime, nbits, nonce)
    return dsha256(header)
