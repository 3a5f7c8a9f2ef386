"""Stratum V1 message types, decoded once per line with msgspec.

Every line is decoded into one ``Message`` (requests, notifications and responses share
the JSON-RPC envelope).  The params of the methods the proxy acts on are then converted
into typed structs with checked hex fields, so the core never handles raw lists.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import errors
from .errors import StratumError

JsonId = int | str | None


class Message(msgspec.Struct, omit_defaults=True):
    """The JSON-RPC envelope: a request/notification has ``method``, a response has none."""

    id: JsonId = None
    method: str | None = None
    params: list[Any] | None = None
    result: Any = None
    error: Any = None


class _IdOnly(msgspec.Struct):
    """Just the id of a line that is not a valid Message: enough to answer it with an error.
    Skipping the other fields does not convert their values, so a number msgspec cannot
    hold (``1e400``) elsewhere in the line does not hide the id."""

    id: JsonId = None


_decoder = msgspec.json.Decoder(Message)
_id_decoder = msgspec.json.Decoder(_IdOnly)
encode = msgspec.json.encode


class BadMessage(ValueError):
    """A line that is not a JSON-RPC message; ``msg_id`` is kept when it could be recovered."""

    def __init__(self, reason: str, msg_id: JsonId = None) -> None:
        super().__init__(reason)
        self.msg_id = msg_id


def decode(line: bytes) -> Message:
    """Decode one line; raise BadMessage (with the id when recoverable) on any error."""
    try:
        return _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:
            msg_id = _id_decoder.decode(line).id
        except msgspec.ValidationError:  # JSON, but not an object with a usable id
            raise BadMessage(f"invalid message: {exc}") from None
        except msgspec.DecodeError:  # not JSON: nothing can be answered
            raise BadMessage(f"invalid JSON: {exc}") from None
        raise BadMessage(f"invalid message: {exc}", msg_id) from None


# --- encoding helpers: build lines as bytes once -------------------------------------------

def response(msg_id: JsonId, result: Any) -> bytes:
    return b'{"id":' + encode(msg_id) + b',"result":' + encode(result) + b',"error":null}\n'


def error_response(msg_id: JsonId, code: int, message: str | None = None) -> bytes:
    text = message or errors.MESSAGES.get(code, "error")
    return (
        b'{"id":' + encode(msg_id) + b',"result":null,"error":' + encode([code, text, None]) + b"}\n"
    )


def request(msg_id: JsonId, method: str, params: list[Any]) -> bytes:
    return encode({"id": msg_id, "method": method, "params": params}) + b"\n"


def notification(method: str, params: list[Any]) -> bytes:
    return encode({"id": None, "method": method, "params": params}) + b"\n"


TRUE_RESULT_TAIL = b',"result":true,"error":null}\n'


def true_response(msg_id: JsonId) -> bytes:
    """The hot-path share answer."""
    return b'{"id":' + encode(msg_id) + TRUE_RESULT_TAIL


# --- typed params ----------------------------------------------------------------------------

def hex_field(value: Any, name: str, size: int | None = None) -> bytes:
    """Check that ``value`` is a hex string (of ``size`` bytes when given) and return its bytes."""
    if not isinstance(value, str):
        raise StratumError(errors.OTHER, f"{name} must be a hex string")
    if size is not None and len(value) != size * 2:
        raise StratumError(errors.OTHER, f"{name} must be {size} bytes of hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise StratumError(errors.OTHER, f"{name} is not valid hex") from None


def u32_field(value: Any, name: str) -> int:
    """An 8-hex-digit big-endian number (ntime, nonce, version, nbits)."""
    if not isinstance(value, str) or len(value) != 8:
        raise StratumError(errors.OTHER, f"{name} must be 8 hex digits")
    try:
        return int(value, 16)
    except ValueError:
        raise StratumError(errors.OTHER, f"{name} is not valid hex") from None


class Submit(msgspec.Struct):
    """A rig's mining.submit: extranonce2 as bytes, numbers as ints."""

    worker: str
    job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int | None


def parse_submit(params: list[Any] | None) -> Submit:
    """The submit's params checked and converted; the usual well-formed submit takes the first
    branch (no call per field: this runs for every share), anything else the checks below,
    which name the bad field."""
    if params and (len(params) == 5 or len(params) == 6):
        worker, job_id, e2, ntime, nonce = params[0], params[1], params[2], params[3], params[4]
        bits = params[5] if len(params) == 6 else "00000000"
        if (type(worker) is str and type(job_id) is str and type(e2) is str and type(ntime) is str
                and type(nonce) is str and type(bits) is str
                and len(ntime) == 8 and len(nonce) == 8 and len(bits) == 8):
            try:
                return Submit(worker, job_id, bytes.fromhex(e2), int(ntime, 16), int(nonce, 16),
                              int(bits, 16) if len(params) == 6 else None)
            except ValueError:
                pass  # bad hex: the checks below say which field
    return _parse_submit_checked(params)


def _parse_submit_checked(params: list[Any] | None) -> Submit:
    if not params or len(params) not in (5, 6):
        raise StratumError(errors.OTHER, "mining.submit takes 5 or 6 params")
    worker, job_id = params[0], params[1]
    if not isinstance(worker, str):
        raise StratumError(errors.OTHER, "worker must be a string")
    if not isinstance(job_id, str):
        raise StratumError(errors.OTHER, "job_id must be a string")
    extranonce2 = hex_field(params[2], "extranonce2")
    ntime = u32_field(params[3], "ntime")
    nonce = u32_field(params[4], "nonce")
    version_bits = u32_field(params[5], "version_bits") if len(params) == 6 else None
    return Submit(worker, job_id, extranonce2, ntime, nonce, version_bits)


class Notify(msgspec.Struct):
    """A pool's mining.notify with the binary fields decoded once."""

    job_id: str
    prevhash: bytes  # as on the wire (word-swapped); see work.prevhash_to_header
    coinb1: bytes
    coinb2: bytes
    merkle_branch: list[bytes]
    version: int
    nbits: int
    ntime: int
    clean_jobs: bool


def parse_notify(params: list[Any] | None) -> Notify:
    if not params or len(params) < 9:
        raise StratumError(errors.INVALID_PARAMS, "mining.notify takes 9 params")
    job_id = params[0]
    if not isinstance(job_id, (str, int)) or isinstance(job_id, bool):
        raise StratumError(errors.INVALID_PARAMS, "job_id must be a string")
    branch = params[4]
    if not isinstance(branch, list):
        raise StratumError(errors.INVALID_PARAMS, "merkle branch must be a list")
    clean = params[8]
    if not isinstance(clean, bool):
        raise StratumError(errors.INVALID_PARAMS, "clean_jobs must be a boolean")
    return Notify(
        job_id=str(job_id),
        prevhash=hex_field(params[1], "prevhash", 32),
        coinb1=hex_field(params[2], "coinb1"),
        coinb2=hex_field(params[3], "coinb2"),
        merkle_branch=[hex_field(h, "merkle branch", 32) for h in branch],
        version=u32_field(params[5], "version"),
        nbits=u32_field(params[6], "nbits"),
        ntime=u32_field(params[7], "ntime"),
        clean_jobs=clean,
    )


def notify_params(n: Notify, *, job_id: str | None = None, coinb1: bytes | None = None,
                  clean_jobs: bool | None = None) -> list[Any]:
    """The wire params of a notify, optionally with a new job id / coinb1 / clean flag."""
    return [
        n.job_id if job_id is None else job_id,
        n.prevhash.hex(),
        (n.coinb1 if coinb1 is None else coinb1).hex(),
        n.coinb2.hex(),
        [h.hex() for h in n.merkle_branch],
        f"{n.version:08x}",
        f"{n.nbits:08x}",
        f"{n.ntime:08x}",
        n.clean_jobs if clean_jobs is None else clean_jobs,
    ]


class SubscribeResult(msgspec.Struct):
    extranonce1: bytes
    extranonce2_size: int


def parse_subscribe_result(result: Any) -> SubscribeResult:
    if not isinstance(result, list) or len(result) < 3:
        raise StratumError(errors.INVALID_PARAMS, "subscribe result must be [subs, extranonce1, size]")
    ext1 = hex_field(result[1], "extranonce1")
    size = result[2]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= 32:
        raise StratumError(errors.INVALID_PARAMS, "extranonce2_size must be an integer 0..32")
    return SubscribeResult(ext1, size)


def parse_set_extranonce(params: list[Any] | None) -> SubscribeResult:
    if not params or len(params) < 2:
        raise StratumError(errors.INVALID_PARAMS, "mining.set_extranonce takes 2 params")
    return parse_subscribe_result([None, params[0], params[1]])


def parse_difficulty(params: list[Any] | None) -> float:
    if not params:
        raise StratumError(errors.INVALID_PARAMS, "difficulty missing")
    value = params[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StratumError(errors.INVALID_PARAMS, "difficulty must be a number")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise StratumError(errors.INVALID_PARAMS, "difficulty must be positive and finite")
    return value


def parse_version_mask(value: Any) -> int:
    return u32_field(value, "version mask")
