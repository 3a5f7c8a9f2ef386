"""The getwork dialect (eth_submitLogin / eth_getWork / eth_submitWork) in the simulators:
a pool and rigs, built on the EthereumStratum ones (``ethpool``, ``ethrigs``).

The pool pushes work as ``{"id": 0, "result": [header, seed, target]}`` and checks every
share with its stand-in proof of work: the mix digest must be a hash of the header and the
whole nonce (``sim_mix``), and the header must be one of its own recent works, so a share
forwarded to the wrong pool, or with its nonce or mix changed on the way, is rejected, as
are duplicates.  The rigs pick their whole nonce at random, as getwork miners do.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from .ethpool import EthSimConn, EthSimPool
from .ethrigs import EthRigFleet, EthSimRig

__all__ = ["EthProxyRigFleet", "EthProxySimPool", "EthProxySimRig", "sim_mix"]

TARGET = "0x" + "00000000ffff" + "0" * 52  # a share target: 2^224 (difficulty 1 in NiceHash terms)


def sim_mix(header: bytes, nonce: bytes) -> bytes:
    """The sim's stand-in for Ethash's mix digest."""
    return hashlib.sha256(header + nonce).digest()


class EthProxySimPool(EthSimPool):
    """A getwork-dialect pool (see the module docstring)."""

    PROOF_FAILED = "sim proof of work failed (nonce, header or mix digest changed)"

    def _work(self, header: bytes) -> list[str]:
        return ["0x" + header.hex(), "0x" + self.seed, TARGET]

    def _notify(self, job_id: str, header: bytes) -> bytes:
        return self._line({"id": 0, "jsonrpc": "2.0", "result": self._work(header)})

    def _handle(self, conn: EthSimConn, msg: dict[str, Any]) -> None:
        method, params, msg_id = msg.get("method"), msg.get("params") or [], msg.get("id")
        write = conn.writer.write
        if method == "eth_submitLogin":
            conn.authorized = True
            write(self._line({"id": msg_id, "jsonrpc": "2.0", "result": True}))
        elif method == "eth_getWork":
            header = self.jobs[next(reversed(self.jobs))]
            write(self._line({"id": msg_id, "jsonrpc": "2.0", "result": self._work(header)}))
        elif method == "eth_submitWork":
            reason = self._check_work(conn, params)
            if reason is None:
                self.accepted += 1
                conn.accepted += 1
                write(self._line({"id": msg_id, "jsonrpc": "2.0", "result": True}))
            else:
                self.rejected[reason] += 1
                conn.rejected[reason] += 1
                write(self._line({"id": msg_id, "jsonrpc": "2.0", "result": None,
                                  "error": {"code": 23, "message": reason}}))
        elif msg_id is not None:
            write(self._line({"id": msg_id, "result": None, "error": [-32601, "unknown method", None]}))

    def _check_work(self, conn: EthSimConn, params: list[Any]) -> str | None:
        if not conn.authorized:
            return "unauthorized"
        try:
            nonce, header, mix = (bytes.fromhex(str(p).removeprefix("0x")) for p in params[:3])
        except ValueError:
            return "not hex"
        if header not in self.jobs.values():
            return "stale or unknown work"
        if len(nonce) != 8 or mix != sim_mix(header, nonce):
            return self.PROOF_FAILED
        if (header.hex(), nonce) in self.seen:
            return "duplicate share"
        self.seen.add((header.hex(), nonce))
        return None


class EthProxySimRig(EthSimRig):
    """A getwork-dialect GPU rig: logs in, asks for work, takes pushes, submits nonce + mix."""

    def _hello(self) -> None:
        self._send("eth_submitLogin", [self.worker, self.password], 1)
        self._send("eth_getWork", [], 3)

    def _handle(self, msg: dict[str, Any]) -> bool:
        method, msg_id, result = msg.get("method"), msg.get("id"), msg.get("result")
        if method is not None:
            self.unexpected.append(f"method {method}")
        elif msg_id == 1:
            self.authorized = result is True
            self.extranonce = b""  # none: the whole nonce is the rig's
        elif msg_id in (0, 3) and isinstance(result, list):  # pushed work, or the getwork answer
            header = bytes.fromhex(result[0].removeprefix("0x"))
            self.job = (result[0], header)
            self.job_arrivals.append((time.monotonic(), header))
        elif msg_id in self.pending:
            del self.pending[msg_id]
            if result is True:
                self.accepted += 1
            else:
                reason = str((msg.get("error") or {}).get("message", "?"))
                self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return False

    def _submit(self) -> None:
        assert self.job is not None
        _, header = self.job
        nonce = os.urandom(8)
        msg_id = self._next_id
        self._next_id += 1
        self.pending[msg_id] = time.monotonic()
        mix = sim_mix(header, nonce)
        self._send("eth_submitWork", ["0x" + nonce.hex(), "0x" + header.hex(), "0x" + mix.hex()], msg_id)


class EthProxyRigFleet(EthRigFleet):
    """``count`` getwork-dialect rigs on one proxy port."""

    rig_type = EthProxySimRig
