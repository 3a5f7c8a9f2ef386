"""Drive ProxyCore without sockets: scripted pools, recorded rigs, an injected clock."""

from __future__ import annotations

import json
from typing import Any

from proxy.config import load_dict
from proxy.core.coordinator import ProxyCore
from proxy.core.upstream import PoolConnection


class FakeIO:
    def __init__(self) -> None:
        self.dialed: list[PoolConnection] = []
        self.closed: list[PoolConnection] = []
        self.wakes: list[float] = []

    def dial(self, conn: PoolConnection) -> None:
        self.dialed.append(conn)

    def close_pool(self, conn: PoolConnection) -> None:
        self.closed.append(conn)

    def wake(self, at: float) -> None:
        self.wakes.append(at)


class FakePoolLink:
    """The pool end of one upstream connection: reads what the core sent, answers."""

    def __init__(self, core: ProxyCore, conn: PoolConnection, clock: Clock) -> None:
        self.core = core
        self.conn = conn
        self.clock = clock
        self.sent: list[dict[str, Any]] = []
        self._buffer = b""

    def write(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self.sent.extend(json.loads(line) for line in lines if line.strip())

    def feed(self, obj: dict[str, Any]) -> None:
        self.core.pool_data(self.conn, json.dumps(obj).encode() + b"\n", self.clock.now)

    def requests(self, method: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("method") == method]

    def handshake(self, extranonce1: str = "aabbccdd", e2_size: int = 8,
                  mask: str | None = "1fffe000", difficulty: float = 1e-9,
                  notify: list | None = None) -> None:
        """Answer configure/subscribe/authorize and send difficulty + a job."""
        for req in list(self.sent):
            method = req.get("method")
            if method == "mining.configure":
                result = ({"version-rolling": True, "version-rolling.mask": mask} if mask
                          else {"version-rolling": False})
                self.feed({"id": req["id"], "result": result, "error": None})
            elif method == "mining.subscribe":
                self.feed({"id": req["id"], "result": [[], extranonce1, e2_size], "error": None})
            elif method == "mining.authorize":
                self.feed({"id": req["id"], "result": True, "error": None})
        self.feed({"id": None, "method": "mining.set_difficulty", "params": [difficulty]})
        self.feed({"id": None, "method": "mining.notify", "params": notify or make_notify("j1")})


def make_notify(job_id: str, clean: bool = True, tag: str = "00") -> list:
    return [job_id, "11" * 32, "01000000" + tag * 4, "ffffffff" + "22" * 20, ["33" * 32],
            "20000000", "1d00ffff", "6553f100", clean]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeRig:
    def __init__(self, core: ProxyCore, clock: Clock, peer: str = "10.0.0.1:4000") -> None:
        self.core = core
        self.clock = clock
        self.received: list[dict[str, Any]] = []
        self.closed = False
        self._buffer = b""
        self.session = core.rig_connected(peer, self._write, self._close, clock.now)
        self._next_id = 1

    def _write(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self.received.extend(json.loads(line) for line in lines if line.strip())

    def _close(self) -> None:
        self.closed = True

    def send_raw(self, data: bytes) -> None:
        self.core.rig_data(self.session, data, self.clock.now)

    def request(self, method: str, params: list) -> int:
        msg_id = self._next_id
        self._next_id += 1
        self.send_raw(json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n")
        return msg_id

    def answer(self, msg_id: int) -> dict[str, Any] | None:
        for m in self.received:
            if m.get("id") == msg_id and "method" not in m:
                return m
        return None

    def notifications(self, method: str) -> list[list]:
        return [m["params"] for m in self.received if m.get("method") == method]

    def setup(self, mask: str | None = "1fffe000") -> None:
        if mask:
            self.request("mining.configure", [["version-rolling"], {"version-rolling.mask": mask}])
        self.request("mining.subscribe", ["test-rig/1.0"])
        self.request("mining.authorize", ["farm.rig1", "x"])


def make_core(pools: list[dict] | None = None, **proxy: Any) -> tuple[ProxyCore, FakeIO, Clock]:
    cfg = load_dict({
        "proxy": {"extranonce_prefix_size": 2, "extranonce2_size": 4, **proxy},
        "pools": pools or [
            {"name": "primary", "url": "stratum+tcp://127.0.0.1:1", "user": "u", "priority": 0},
            {"name": "backup", "url": "stratum+tcp://127.0.0.1:2", "user": "u", "priority": 1},
        ],
    })
    io = FakeIO()
    clock = Clock()
    core = ProxyCore(cfg, io, clock.now)
    return core, io, clock


def connect(core: ProxyCore, conn: PoolConnection, clock: Clock) -> FakePoolLink:
    link = FakePoolLink(core, conn, clock)
    core.pool_connected(conn, link.write, clock.now)
    return link
