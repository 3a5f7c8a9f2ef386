"""The control plane over real sockets: sim pools, the proxy service with its API, HTTP calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet
from tests.farm_fixture import ProxyReads, stop_all

TOKEN = "secret"
POOL_PASSWORD = "hunter2-pool-password"
# the simulated marketplace's credentials, as the environment variables a [rental] section names
SIM_MARKET_ENV = {"SIMMARKET_KEY": "sim-key", "SIMMARKET_SECRET": "sim-secret", "SIMMARKET_ORG": "sim-org"}


def sim_rental(market_url: str, ledger: str, **fields: Any) -> dict[str, Any]:
    """A [rental] section for the simulated marketplace (set SIM_MARKET_ENV in the environment):
    quick to decide (1 s window, 0.2 s interval), max price 4000 BTC/PH/day, 0.01 BTC a day."""
    return {"provider": "sim", "api_url": market_url, "key_env": "SIMMARKET_KEY",
            "secret_env": "SIMMARKET_SECRET", "org_env": "SIMMARKET_ORG", "max_price": "4000",
            "daily_budget_btc": "0.01", "window_s": 1.0, "interval_s": 0.2, "ledger": ledger, **fields}


def to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML for our config dicts (tables, arrays of tables, scalars)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(str(v))

    out: list[str] = []
    for section in ("proxy", "api", "rental"):
        if section in data:
            out.append(f"[{section}]")
            out.extend(f"{k} = {scalar(v)}" for k, v in data[section].items())
            out.append("")
    for pool in data.get("pools", []):
        out.append("[[pools]]")
        out.extend(f"{k} = {scalar(v)}" for k, v in pool.items())
        out.append("")
    return "\n".join(out)


class RawRig:
    """A hand-driven rig socket: subscribe + authorize, then read what the proxy sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[dict[str, Any]] = []
        self._next_id = 1

    @classmethod
    async def connect(cls, port: int, worker: str) -> RawRig:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        rig = cls(reader, writer)
        rig.send("mining.subscribe", ["raw-rig/1.0"])
        rig.send("mining.authorize", [worker, "x"])
        await rig.read_until(lambda m: m.get("method") == "mining.notify")
        return rig

    def send(self, method: str, params: list) -> int:
        msg_id = self._next_id
        self._next_id += 1
        self.writer.write(json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n")
        return msg_id

    async def read_until(self, predicate, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionError("the proxy closed the rig's connection")
                msg = json.loads(line)
                self.seen.append(msg)
                if predicate(msg):
                    return msg

    async def on_job_of(self, tag: str, timeout: float = 5.0) -> None:
        hex_tag = tag.encode().hex()
        notifies = [m for m in self.seen if m.get("method") == "mining.notify"]
        if notifies and hex_tag in notifies[-1]["params"][2]:
            return
        await self.read_until(lambda m: m.get("method") == "mining.notify" and hex_tag in m["params"][2],
                              timeout)

    async def alive(self) -> bool:
        """The connection is open: the proxy still answers a request on it."""
        msg_id = self.send("mining.extranonce.subscribe", [])
        await self.read_until(lambda m: m.get("id") == msg_id and "method" not in m)
        return True

    def close(self) -> None:
        self.writer.close()


class Api(ProxyReads):
    """Pools + proxy (with its API) + HTTP client, torn down in reverse order."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.pools: dict[str, SimPool] = {}
        self.svc: ProxyService | None = None
        self.http: aiohttp.ClientSession | None = None
        self.fleets: list[RigFleet] = []
        self.raw: list[RawRig] = []
        self.config_path = tmp_path / "proxy.toml"
        self.data: dict[str, Any] = {}

    async def pool(self, name: str, **kwargs: Any) -> SimPool:
        kwargs.setdefault("difficulty", 2**-24)
        kwargs.setdefault("job_interval", 30.0)
        kwargs.setdefault("extranonce2_size", 8)
        pool = SimPool(SimPoolConfig(name=name, **kwargs))
        await pool.start()
        self.pools[name] = pool
        return pool

    def pool_entry(self, name: str, priority: int, **extra: Any) -> dict[str, Any]:
        return {"name": name, "url": f"stratum+tcp://127.0.0.1:{self.pools[name].port}",
                "user": f"farm.{name}", "password": POOL_PASSWORD, "priority": priority, **extra}

    async def start(self, token: str = TOKEN, history_db: str = "", history_interval: float = 0.1,
                    instance: str = "test-proxy", rental: dict[str, Any] | None = None,
                    pool_extra: dict[str, dict[str, Any]] | None = None,
                    power: dict[str, Any] | None = None, **proxy: Any) -> ProxyService:
        """The proxy on every sim pool (``pool_extra[name]`` overrides fields of its entry)."""
        pool_extra = pool_extra or {}
        self.data = {
            "proxy": {"listen": "127.0.0.1:0", "instance": instance, "history_db": history_db,
                      "failback_hold_s": 60.0, **proxy},
            "api": {"listen": "127.0.0.1:0", "token": token},
            "pools": [self.pool_entry(name, i, **pool_extra.get(name, {}))
                      for i, name in enumerate(self.pools)],
        }
        if rental is not None:
            self.data["rental"] = rental
        if power is not None:
            self.data["power"] = power
        self.config_path.write_text(to_toml(self.data))
        cfg = load_dict(self.data, str(self.config_path))
        svc = ProxyService(cfg)
        svc.config.proxy.history_sample_s = history_interval  # read by start_api
        await svc.start()
        self.svc = svc
        assert svc.api_port
        self.http = aiohttp.ClientSession(f"http://127.0.0.1:{svc.api_port}")
        first = next(iter(self.pools))
        await wait_until(lambda: svc.view.active_pools() == [first], 10, what=f"{first} active")
        return svc

    async def fleet(self, count: int, **kwargs: Any) -> RigFleet:
        assert self.svc is not None
        kwargs.setdefault("share_interval", 0.2)
        kwargs.setdefault("seed", len(self.fleets) + 1)
        fleet = RigFleet("127.0.0.1", self.svc.port, count, **kwargs)
        self.fleets.append(fleet)
        await fleet.start()
        await fleet.wait_until(lambda: fleet.authorized == count, 10, f"{count} rigs authorized")
        return fleet

    async def raw_rig(self, worker: str) -> RawRig:
        assert self.svc is not None
        rig = await RawRig.connect(self.svc.port, worker)
        self.raw.append(rig)
        return rig

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        assert self.http is not None
        async with self.http.get(path, **kwargs) as resp:
            assert resp.status == status, (path, resp.status, await resp.text())
            if resp.content_type == "application/json":
                return await resp.json()
            return await resp.text()

    async def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.request(method, path, **kwargs) as resp:
            body = await resp.text()
            assert resp.status == status, (method, path, resp.status, body)
            assert resp.content_type == "application/json", (resp.content_type, body)
            return json.loads(body)

    def service(self) -> ProxyService:
        assert self.svc is not None, "the proxy is not started"
        return self.svc

    async def close(self) -> None:
        for rig in self.raw:
            with contextlib.suppress(Exception):
                rig.close()
        await stop_all(self.fleets)
        if self.http is not None:
            await self.http.close()
        await stop_all([self.svc] if self.svc else [], self.pools.values())


@pytest.fixture
async def api(tmp_path):
    a = Api(tmp_path)
    try:
        yield a
    finally:
        await asyncio.wait_for(a.close(), 15)
