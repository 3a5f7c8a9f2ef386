"""EthereumStratum/1.0.0 (NiceHash's published spec) on the wire: the shapes GPU rigs and
Ethash-family pools (Etchash, DaggerHashimoto) exchange.

The envelope is the same JSON-RPC line as Stratum V1, so lines are decoded once by
``messages.decode``; what differs is the params, converted here into typed structs with
checked hex fields so the core never handles raw lists:

- ``mining.subscribe`` [agent, "EthereumStratum/1.0.0"] -> [[notify, session id, protocol], extranonce]
- ``mining.notify`` [job id, seed hash, header hash, clean]
- ``mining.set_extranonce`` [extranonce]; ``mining.set_difficulty`` [difficulty]
- ``mining.submit`` [worker, job id, nonce without the extranonce]

The 8-byte Ethash nonce is ``extranonce + the miner's part``: the pool (or the proxy) fixes
the leading bytes, the miner searches the rest.  No Keccak and no DAG here: the proxy does
not verify the proof of work (see README), it checks everything else.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import errors, messages
from .errors import StratumError

PROTOCOL = "EthereumStratum/1.0.0"
NONCE_SIZE = 8  # bytes of the Ethash nonce
MAX_EXTRANONCE = 6  # a rig must keep at least 2 bytes to search
LEGACY_METHODS = frozenset({"eth_submitLogin", "eth_getWork", "eth_submitWork", "eth_submitHashrate"})


class EthNotify(msgspec.Struct, frozen=True):
    """One job: the seed hash picks the epoch (DAG), the header hash is what is mined."""

    job_id: str
    seed_hash: str  # 64 hex digits, lower case, no 0x
    header_hash: str
    clean: bool
    target: str = ""  # the getwork dialect's share target (64 hex digits); "" in EthereumStratum


class EthSubmit(msgspec.Struct):
    """A rig's share: the nonce as sent (without the extranonce, or the full 8 bytes)."""

    worker: str
    job_id: str
    nonce: bytes


def _hex(value: Any, name: str, size: int | None = None, *, max_size: int = 64) -> bytes:
    """A hex string (0x prefix allowed) of ``size`` bytes, or up to ``max_size``."""
    if not isinstance(value, str):
        raise StratumError(errors.INVALID_PARAMS, f"{name} must be a hex string")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise StratumError(errors.INVALID_PARAMS, f"{name} is not hex: {value[:80]!r}") from None
    if (size is not None and len(raw) != size) or len(raw) > max_size:
        raise StratumError(errors.INVALID_PARAMS, f"{name} has {len(raw)} bytes, expected "
                                                  f"{size if size is not None else max_size}")
    return raw


def parse_notify(params: list[Any] | None) -> EthNotify:
    """A pool's mining.notify; a malformed one raises StratumError (the pool broke the protocol)."""
    if not params or len(params) < 3 or not isinstance(params[0], str) or not params[0]:
        raise StratumError(errors.INVALID_PARAMS,
                           "mining.notify takes [job id, seed hash, header hash, clean]")
    seed = _hex(params[1], "seed hash", 32)
    header = _hex(params[2], "header hash", 32)
    clean = bool(params[3]) if len(params) > 3 else True
    return EthNotify(params[0][:64], seed.hex(), header.hex(), clean)


def parse_extranonce(value: Any) -> bytes:
    """The extranonce of a subscribe answer or mining.set_extranonce (0..6 bytes)."""
    return _hex(value, "extranonce", max_size=MAX_EXTRANONCE)


def parse_subscribe_result(result: Any) -> bytes:
    """The pool's subscribe answer [[...], extranonce]: the extranonce it fixed for us."""
    if not isinstance(result, list) or len(result) < 2:
        raise StratumError(errors.INVALID_PARAMS,
                           "subscribe answer must be [[notify, id, protocol], extranonce]")
    return parse_extranonce(result[1])


def parse_submit(params: list[Any] | None) -> EthSubmit:
    """A rig's mining.submit [worker, job id, nonce]."""
    if not params or len(params) < 3 or not all(isinstance(p, str) for p in params[:3]):
        raise StratumError(errors.INVALID_PARAMS, "mining.submit takes [worker, job id, nonce]")
    return EthSubmit(params[0][:256], params[1][:64], _hex(params[2], "nonce", max_size=NONCE_SIZE))


def subscribe_answer(msg_id: Any, session_id: str, extranonce: bytes) -> bytes:
    """Answer a rig's subscribe with the extranonce it mines under."""
    return messages.response(msg_id, [["mining.notify", session_id, PROTOCOL], extranonce.hex()])


def notify_line(job_id: str, job: EthNotify, clean: bool) -> bytes:
    """One mining.notify line under the proxy's job id: the same bytes for every rig."""
    return messages.notification("mining.notify", [job_id, job.seed_hash, job.header_hash, clean])


def set_extranonce_line(extranonce: bytes) -> bytes:
    """mining.set_extranonce for a rig that subscribed to extranonce changes."""
    return messages.notification("mining.set_extranonce", [extranonce.hex()])


def set_difficulty_line(difficulty: float) -> bytes:
    """mining.set_difficulty (NiceHash's difficulty: 1 = a target of 2^224)."""
    return messages.notification("mining.set_difficulty", [difficulty])


def subscribe_request(msg_id: int, agent: str) -> bytes:
    """The proxy's own subscribe to an EthereumStratum pool."""
    return messages.request(msg_id, "mining.subscribe", [agent, PROTOCOL])


def submit_request(msg_id: int, worker: str, job_id: str, nonce: bytes) -> bytes:
    """A share forwarded to the pool: the nonce without the pool's extranonce."""
    return messages.request(msg_id, "mining.submit", [worker, job_id, nonce.hex()])
