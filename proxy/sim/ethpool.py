"""A simulated EthereumStratum/1.0.0 pool (Etchash/DaggerHashimoto style), with faults.

Independent of ``proxy.core``: it gives every connection its own extranonce, sends jobs,
and checks every share the way a real pool's proof of work would catch a wrong nonce:
the sim's stand-in for Ethash is ``sim_tag`` (the last 3 bytes of the full 8-byte nonce
must be a hash of the job's header and the nonce's first 5 bytes).  The pool rebuilds the
full nonce as *the extranonce it gave this connection* + the submitted nonce, so a share
mined under any other extranonce (another pool's, another connection's, a rig that missed
a ``mining.set_extranonce``) fails the check, as it would fail Ethash.  It rejects
duplicates and stale jobs, and counts everything per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ._wait import wait_until

__all__ = ["EthSimPool", "sim_tag"]

PROTOCOL = "EthereumStratum/1.0.0"
TAG = 3  # bytes of the sim's proof at the end of the nonce
JOBS_KEPT = 3  # a share for an older job is stale


def sim_tag(header: bytes, head: bytes) -> bytes:
    """The sim's stand-in for Ethash: what the last 3 nonce bytes must be."""
    return hashlib.sha256(header + head).digest()[:TAG]


@dataclass
class EthSimConn:
    """One proxy connection as the pool sees it."""

    conn_id: int
    extranonce: bytes
    writer: asyncio.StreamWriter
    authorized: bool = False
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)


class EthSimPool:
    """An asyncio EthereumStratum pool on loopback (see the module docstring)."""

    PROOF_FAILED = "wrong extranonce (sim proof of work failed)"

    def __init__(self, name: str, *, extranonce_size: int = 2, job_interval: float = 2.0,
                 difficulty: float = 1.0) -> None:
        self.name = name
        self.extranonce_size = extranonce_size
        self.job_interval = job_interval
        self.difficulty = difficulty
        self.port = 0
        self.conns: dict[int, EthSimConn] = {}
        self.jobs: dict[str, bytes] = {}  # job id -> header hash (the newest JOBS_KEPT)
        self.seen: set[tuple[str, bytes]] = set()
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.connections_total = 0
        self.stalled = False
        self.answer_delay = 0.0
        self._seq = 0
        self._next_conn = 0
        self._server: asyncio.AbstractServer | None = None
        self._job_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.seed = hashlib.sha256(b"epoch-0").hexdigest()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._new_job()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._job_task = asyncio.get_running_loop().create_task(self._jobs())

    async def stop(self) -> None:
        if self._job_task is not None:
            self._job_task.cancel()
        if self._server is not None:
            self._server.close()
        self.reset_all()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ faults

    def reset_all(self) -> None:
        """Abort every connection (a TCP reset); the port stays open, so the proxy redials."""
        for conn in list(self.conns.values()):
            conn.writer.transport.abort()
        self.conns.clear()

    def stall(self) -> None:
        """Stop answering and stop sending jobs; connections stay open (a silent pool)."""
        self.stalled = True

    def unstall(self) -> None:
        self.stalled = False

    # ------------------------------------------------------------------ figures

    @property
    def shares(self) -> int:
        return self.accepted + sum(self.rejected.values())

    def wrong_extranonce(self) -> int:
        """Shares that failed the sim's proof of work: a nonce without the extranonce this pool
        gave that connection (or, in the getwork dialect, a nonce/header/mix changed)."""
        return self.rejected[self.PROOF_FAILED]

    async def wait_until(self, predicate: Any, timeout: float, what: str) -> None:
        await wait_until(predicate, timeout, what=f"{self.name}: {what}")

    # ------------------------------------------------------------------ jobs

    def header_prefix(self) -> bytes:
        """Every header of this pool starts with its name: rigs can tell whose job they mine."""
        return self.name.encode()[:12].ljust(12, b"_")

    def _new_job(self) -> tuple[str, bytes]:
        self._seq += 1
        job_id = f"{self._seq:08x}"
        header = self.header_prefix() + hashlib.sha256(f"{self.name}:{self._seq}".encode()).digest()[:20]
        self.jobs[job_id] = header
        while len(self.jobs) > JOBS_KEPT:
            self.jobs.pop(next(iter(self.jobs)))
        return job_id, header

    def _notify(self, job_id: str, header: bytes) -> bytes:
        return self._line({"id": None, "method": "mining.notify",
                           "params": [job_id, self.seed, header.hex(), True]})

    async def _jobs(self) -> None:
        while True:
            await asyncio.sleep(self.job_interval)
            if self.stalled:
                continue
            line = self._notify(*self._new_job())
            for conn in list(self.conns.values()):
                if conn.authorized:
                    conn.writer.write(line)

    # ------------------------------------------------------------------ serving

    @staticmethod
    def _line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_conn += 1
        self.connections_total += 1
        # a distinct extranonce per connection and per pool: name byte + connection number
        tag = hashlib.sha256(self.name.encode()).digest()[0]
        low = self.extranonce_size - 1
        value = (tag << 8 * low) | (self._next_conn % 256 ** low)
        conn = EthSimConn(self._next_conn, value.to_bytes(self.extranonce_size, "big"), writer)
        self.conns[conn.conn_id] = conn
        try:
            while line := await reader.readline():
                if self.stalled:
                    continue
                msg = json.loads(line)
                if self.answer_delay:
                    await asyncio.sleep(self.answer_delay)
                self._handle(conn, msg)
        except (ConnectionError, ValueError):
            pass
        finally:
            self.conns.pop(conn.conn_id, None)
            with contextlib.suppress(Exception):
                writer.close()

    def _handle(self, conn: EthSimConn, msg: dict[str, Any]) -> None:
        method, params, msg_id = msg.get("method"), msg.get("params") or [], msg.get("id")
        write = conn.writer.write
        if method == "mining.subscribe":
            write(self._line({"id": msg_id, "result": [["mining.notify", f"{conn.conn_id:08x}", PROTOCOL],
                                                       conn.extranonce.hex()], "error": None}))
        elif method == "mining.extranonce.subscribe":
            write(self._line({"id": msg_id, "result": True, "error": None}))
        elif method == "mining.authorize":
            conn.authorized = True
            write(self._line({"id": msg_id, "result": True, "error": None}))
            write(self._line({"id": None, "method": "mining.set_difficulty", "params": [self.difficulty]}))
            job_id = next(reversed(self.jobs))
            write(self._notify(job_id, self.jobs[job_id]))
        elif method == "mining.submit":
            reason = self._check(conn, params)
            if reason is None:
                self.accepted += 1
                conn.accepted += 1
                write(self._line({"id": msg_id, "result": True, "error": None}))
            else:
                self.rejected[reason] += 1
                conn.rejected[reason] += 1
                write(self._line({"id": msg_id, "result": None, "error": [23, reason, None]}))
        elif msg_id is not None:
            write(self._line({"id": msg_id, "result": None, "error": [-32601, "unknown method", None]}))

    def _check(self, conn: EthSimConn, params: list[Any]) -> str | None:
        if not conn.authorized:
            return "unauthorized"
        if len(params) < 3:
            return "bad params"
        job_id, nonce_hex = params[1], params[2]
        header = self.jobs.get(job_id)
        if header is None:
            return "stale or unknown job"
        try:
            nonce = bytes.fromhex(nonce_hex)
        except (TypeError, ValueError):
            return "nonce not hex"
        if len(conn.extranonce) + len(nonce) != 8:
            return f"nonce has {len(nonce)} bytes, expected {8 - len(conn.extranonce)}"
        full = conn.extranonce + nonce
        if full[-TAG:] != sim_tag(header, full[:-TAG]):
            return self.PROOF_FAILED
        if (job_id, full) in self.seen:
            return "duplicate share"
        self.seen.add((job_id, full))
        return None
