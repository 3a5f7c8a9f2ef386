"""Simulated GPU rigs speaking EthereumStratum/1.0.0, and a fleet of them.

A rig subscribes ("EthereumStratum/1.0.0"), optionally subscribes to extranonce changes
(ethminer and most NiceHash-compatible miners do; ``takes_set_extranonce=False`` models
one that does not), authorizes, then "finds" shares: nonces under its current extranonce
that pass the sim pool's stand-in proof of work (``ethpool.sim_tag``).  It follows
``mining.set_extranonce`` at once, and ``client.reconnect`` by reconnecting (counted, not
as a disconnect).  Every submit waits for its answer; ``pending`` is what is unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from ._wait import wait_until
from .ethpool import TAG, sim_tag

__all__ = ["EthRigFleet", "EthSimRig"]


class EthSimRig:
    """One GPU rig (see the module docstring)."""

    def __init__(self, host: str, port: int, index: int, *, share_interval: float = 0.1,
                 takes_set_extranonce: bool = True, worker_prefix: str = "gpu", password: str = "x") -> None:
        self.host = host
        self.port = port
        self.worker = f"{worker_prefix}{index:04d}"
        self.password = password
        self.share_interval = share_interval
        self.takes_set_extranonce = takes_set_extranonce
        self.extranonce: bytes | None = None
        self.job: tuple[str, bytes] | None = None  # (job id, header hash)
        self.difficulty = 0.0
        self.authorized = False
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.pending: dict[int, float] = {}  # id -> sent at
        self.disconnects = 0  # closed by the proxy without being asked to reconnect
        self.reconnects = 0  # client.reconnect followed
        self.extranonce_changes = 0
        self.connect_failures = 0
        self.abandoned = 0  # shares unanswered when the rig itself left on client.reconnect
        self.unexpected: list[str] = []  # protocol surprises (a set_extranonce we never asked for)
        self.job_arrivals: list[tuple[float, bytes]] = []  # (monotonic, header) of each job
        self.local_address = ""  # this rig's end of its current connection
        self.submitting = True
        self._counter = 0
        self._next_id = 10
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.changed = asyncio.Event()

    def on_pool(self, prefix: bytes) -> bool:
        """True when the rig mines a job whose header starts with the pool's prefix."""
        return self.job is not None and self.job[1].startswith(prefix)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            self._writer.transport.abort()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def _send(self, method: str, params: list[Any], msg_id: int | None) -> None:
        assert self._writer is not None
        self._writer.write(json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.connect_failures += 1
                await asyncio.sleep(0.2)
                continue
            self._writer = writer
            host, port = writer.get_extra_info("sockname")[:2]
            self.local_address = f"{host}:{port}"  # what the proxy should report as its peer
            self.extranonce = None
            self.job = None
            self.abandoned += len(self.pending)  # only after client.reconnect: see _run's end
            self.pending.clear()
            self._hello()
            submitter = asyncio.get_running_loop().create_task(self._submit_loop())
            asked = False
            try:
                while line := await reader.readline():
                    asked = self._handle(json.loads(line)) or asked
                    self.changed.set()
                    if asked:
                        break
            except (ConnectionError, ValueError):
                pass
            finally:
                submitter.cancel()
                writer.transport.abort()
            if self._stopping:
                return
            if asked:
                self.reconnects += 1
            else:
                self.disconnects += 1
                await asyncio.sleep(0.2)
            self.changed.set()

    def _hello(self) -> None:
        """The handshake, pipelined as GPU miners send it."""
        self._send("mining.subscribe", ["SimGPU/1.0", "EthereumStratum/1.0.0"], 1)
        if self.takes_set_extranonce:
            self._send("mining.extranonce.subscribe", [], 2)
        self._send("mining.authorize", [self.worker, self.password], 3)

    def _handle(self, msg: dict[str, Any]) -> bool:
        """One line from the proxy; True when it asks the rig to reconnect."""
        method, params, msg_id = msg.get("method"), msg.get("params") or [], msg.get("id")
        if method is None:
            if msg_id == 1:
                self.extranonce = bytes.fromhex(msg["result"][1])
            elif msg_id == 3:
                self.authorized = msg.get("result") is True
            elif msg_id in self.pending:
                del self.pending[msg_id]
                if msg.get("result") is True:
                    self.accepted += 1
                else:
                    reason = str((msg.get("error") or ["", "?"])[1])
                    self.rejected[reason] = self.rejected.get(reason, 0) + 1
        elif method == "mining.notify":
            self.job = (params[0], bytes.fromhex(params[2]))
            self.job_arrivals.append((time.monotonic(), self.job[1]))
        elif method == "mining.set_difficulty":
            self.difficulty = float(params[0])
        elif method == "mining.set_extranonce":
            if not self.takes_set_extranonce:
                self.unexpected.append("mining.set_extranonce without extranonce.subscribe")
            self.extranonce = bytes.fromhex(params[0])
            self.extranonce_changes += 1
        elif method == "client.reconnect":
            return True
        return False

    async def _submit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.share_interval)
            if self.submitting and self.job is not None and self.extranonce is not None and self.authorized:
                self._submit()

    def _submit(self) -> None:
        assert self.job is not None and self.extranonce is not None
        job_id, header = self.job
        self._counter += 1
        free = 8 - len(self.extranonce) - TAG
        head = self.extranonce + (self._counter % 256 ** free).to_bytes(free, "big")
        nonce = head + sim_tag(header, head)
        msg_id = self._next_id
        self._next_id += 1
        self.pending[msg_id] = time.monotonic()
        self._send("mining.submit", [self.worker, job_id, nonce[len(self.extranonce):].hex()], msg_id)


class EthRigFleet:
    """``count`` GPU rigs on one proxy port; the last ``refusers`` do not take set_extranonce."""

    rig_type: type[EthSimRig] = EthSimRig

    def __init__(self, host: str, port: int, count: int, *, share_interval: float = 0.1,
                 refusers: int = 0, worker_prefix: str = "gpu", password: str = "x") -> None:
        self.rigs = [self.rig_type(host, port, i, share_interval=share_interval,
                               takes_set_extranonce=i < count - refusers, worker_prefix=worker_prefix,
                               password=password) for i in range(count)]

    async def start(self) -> None:
        for rig in self.rigs:
            await rig.start()

    async def stop(self) -> None:
        for rig in self.rigs:
            await rig.stop()

    def total(self, field: str) -> int:
        return sum(getattr(r, field) for r in self.rigs)

    @property
    def pending(self) -> int:
        return sum(len(r.pending) for r in self.rigs)

    @property
    def rejected(self) -> int:
        return sum(sum(r.rejected.values()) for r in self.rigs)

    def on_pool(self, prefix: bytes, rigs: list[EthSimRig] | None = None) -> int:
        return sum(r.on_pool(prefix) for r in (rigs if rigs is not None else self.rigs))

    async def wait_until(self, predicate: Any, timeout: float, what: str) -> None:
        await wait_until(predicate, timeout, what=what)

    async def drain(self, timeout: float) -> None:
        """Stop submitting and wait until every share sent has its answer."""
        for rig in self.rigs:
            rig.submitting = False
        await wait_until(lambda: self.pending == 0, timeout,
                         what=f"every share answered ({self.pending} pending)")
