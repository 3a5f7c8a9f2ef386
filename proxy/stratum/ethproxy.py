"""The older Ethereum stratum dialect ("stratum1", eth-proxy): getwork over a TCP line.

- ``eth_submitLogin`` [account, password?] -> true
- ``eth_getWork`` [] -> [header hash, seed hash, target] (0x-prefixed hex; some pools add
  the block number as a 4th element, ignored); the pool also pushes new work unasked as
  ``{"id": 0, "result": [header, seed, target]}``
- ``eth_submitWork`` [nonce (8 bytes), header hash, mix digest] -> true / false / error
- ``eth_submitHashrate`` [hashrate, id] -> true

There is no extranonce: the miner picks the whole 8-byte nonce, so an ethproxy rig can only
be moved between ethproxy pools (each switch is just new work), never folded under an
EthereumStratum pool's extranonce.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import errors, messages
from .errors import StratumError
from .ethstratum import NONCE_SIZE, EthNotify, _hex

DIALECT = "ethproxy"
PUSH_ID = 0  # the id of work the pool pushes unasked


class EthWork(msgspec.Struct):
    """A share of the getwork dialect: the nonce, the work it was found for, its mix digest."""

    nonce: bytes
    header_hash: str  # 64 hex digits, lower case, no 0x
    mix_digest: bytes


def parse_work(result: Any, job_id: str) -> EthNotify:
    """A getwork answer or push [header, seed, target, ...] as a job (``clean`` False: the
    pool, not the proxy, decides how long old work stays valid)."""
    if not isinstance(result, list) or len(result) < 3:
        raise StratumError(errors.INVALID_PARAMS, "work must be [header hash, seed hash, target]")
    header = _hex(result[0], "header hash", 32)
    seed = _hex(result[1], "seed hash", 32)
    target = _hex(result[2], "target", max_size=32)
    return EthNotify(job_id, seed.hex(), header.hex(), False, target.hex())


def is_work(msg: messages.Message) -> bool:
    """A pushed job: a response-shaped line with the push id and a list result."""
    return msg.method is None and msg.id in (PUSH_ID, None) and isinstance(msg.result, list)


def parse_submit(params: list[Any] | None) -> EthWork:
    """A rig's eth_submitWork [nonce, header hash, mix digest]."""
    if not params or len(params) < 3:
        raise StratumError(errors.INVALID_PARAMS, "eth_submitWork takes [nonce, header hash, mix digest]")
    return EthWork(_hex(params[0], "nonce", NONCE_SIZE), _hex(params[1], "header hash", 32).hex(),
                   _hex(params[2], "mix digest", 32))


def work_result(job: EthNotify) -> list[str]:
    """The work as a getwork answer."""
    return ["0x" + job.header_hash, "0x" + job.seed_hash, "0x" + job.target]


def work_push(job: EthNotify) -> bytes:
    """New work pushed to a rig: the same bytes for every rig."""
    return messages.encode({"id": PUSH_ID, "jsonrpc": "2.0", "result": work_result(job)}) + b"\n"


def submit_request(msg_id: int, work: EthWork) -> bytes:
    """A share forwarded to an ethproxy pool, as the rig found it."""
    return messages.request(msg_id, "eth_submitWork",
                            ["0x" + work.nonce.hex(), "0x" + work.header_hash, "0x" + work.mix_digest.hex()])
