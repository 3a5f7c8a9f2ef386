"""The share check, as a pure function: a job, the rig's view of it and a submit in, a
verdict out.  No counters, no sockets: it is tested alone on real mainnet blocks, and the
share path (``sharepath``) does the bookkeeping around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..stratum import errors
from ..stratum.errors import StratumError
from ..stratum.messages import Submit

if TYPE_CHECKING:
    from .jobs import Job

LOW64 = (1 << 64) - 1
BIP320_MASK = 0x1FFFE000  # the general-purpose bits firmware rolls without asking


class RigTerms(Protocol):
    """What the share check needs to know of the rig that submits (a RigSession has it)."""

    @property
    def prefix(self) -> bytes:  # the rig's extranonce1 prefix under the fold
        """The extranonce1 prefix that goes into the coinbase (unless the job is pass-through)."""

    @property
    def requested_mask(self) -> int | None:  # asked-for version mask; None: never configured
        """The version mask the rig asked for; None: it never sent mining.configure."""


@dataclass(slots=True)
class ShareVerdict:
    """A share that passed: its hash value and whether it meets the pool's target."""

    value: int
    forward: bool
    outside_pool_mask: bool  # valid work whose version bits the pool's mask does not allow
    difficulty: float  # the job's (pool's) difficulty: what the pool credits if forwarded


def mask_for_job(job: Job, requested_mask: int | None) -> int:
    """The version bits the rig may roll on this job: what it asked for, within the pool's
    mask when the job was sent.  A rig that never sent mining.configure but rolls anyway
    (some S21 firmware) rolls the BIP320 bits whatever the pool: its work is checked
    against those, and only forwarded where the pool's mask allows them."""
    if requested_mask is None:
        return BIP320_MASK
    return requested_mask & (job.version_mask or 0)


def check_share(job: Job, rig: RigTerms, submit: Submit, ntime_window_s: int,
                pool_target: int, rig_target: int | None) -> ShareVerdict:
    """Raise StratumError for a share the rig must be told is bad; else the verdict.

    ``pool_target`` is the pool connection's target now (a share meeting it, or the job's own
    target, is owed to the pool); ``rig_target`` is the target of the rig's current
    difficulty when it differs from the job's (work made after a set_difficulty).
    """
    if job.stale:
        raise StratumError(errors.JOB_NOT_FOUND)
    if len(submit.extranonce2) != job.extranonce2_size:
        raise StratumError(errors.OTHER, f"extranonce2 must be {job.extranonce2_size} bytes")
    if not job.ntime <= submit.ntime <= job.ntime + ntime_window_s:
        raise StratumError(errors.OTHER, "ntime out of range")
    version = job.version
    bits = submit.version_bits
    if bits is not None:
        mask = mask_for_job(job, rig.requested_mask)
        if bits & ~mask & (job.version ^ bits):
            raise StratumError(errors.OTHER, "version bits outside the negotiated mask")
        version = (job.version & ~mask & 0xFFFFFFFF) | (bits & mask)
    ext1 = rig.prefix if job.rig_extranonce1 is None else job.rig_extranonce1
    digest = job.header_hash(ext1, submit.extranonce2, submit.ntime, submit.nonce, version)
    value = int.from_bytes(digest, "little")
    target = job.target if rig_target is None else max(job.target, rig_target)
    if value > target:
        raise StratumError(errors.LOW_DIFFICULTY)
    outside = bits is not None and bool(bits & ~(job.version_mask or 0) & (job.version ^ bits))
    owed = (value <= pool_target or value <= job.target) and not outside
    return ShareVerdict(value, owed, outside, job.difficulty)
