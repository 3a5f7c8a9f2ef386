"""Debian's Prometheus against the shipped configs: promtool, and a real server on loopback.

The binaries come from the Debian package ``prometheus`` (``make test`` and ``.ci/run`` install
it when it is missing). Without them these tests FAIL saying so; they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "configs" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "alerts.test.yml"
GRAFANA_BOARD = ROOT / "configs" / "grafana" / "stratum-proxy.json"


def debian_binary(name: str) -> str:
    exe = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if exe is None:
        pytest.fail(f"{name} is not installed: install the Debian package with 'apt-get install -y "
                    "--no-install-recommends prometheus' (make test and .ci/run do it when it is "
                    "missing)", pytrace=False)
    return exe


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([debian_binary("promtool"), *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules(data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    data = load_yaml(RULES) if data is None else data
    return [r for g in data["groups"] for r in g["rules"] if "alert" in r]


def board_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    panels = list(board["panels"])
    for panel in panels:
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
        out += [(panel["title"], t["expr"]) for t in panel.get("targets", [])]
    return out


def variable_queries(board: dict[str, Any]) -> list[str]:
    return [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def poll_until(fetch: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float,
                     what: str, every: float = 0.2) -> Any:
    """Ask ``fetch()`` again until ``ok(answer)``; TimeoutError after ``timeout`` seconds with the
    last answer (the deadline-bounded wait of proxy.sim._wait for an asynchronous source)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = await fetch()
        if ok(last):
            return last
        if loop.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}; last answer: {last!r}")
        await asyncio.sleep(every)


class Prometheus:
    """A Prometheus server in the foreground of a subprocess, on 127.0.0.1, data in a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "prometheus.log"
        self.http: aiohttp.ClientSession | None = None

    async def start(self, config: dict[str, Any]) -> None:
        path = self.tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        check = promtool("check", "config", str(path))
        assert check.returncode == 0, check.stdout + check.stderr
        self.port = free_port()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [debian_binary("prometheus"), f"--config.file={path}",
                 f"--web.listen-address=127.0.0.1:{self.port}", f"--storage.tsdb.path={self.tmp / 'data'}",
                 "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.http = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}",
                                          timeout=aiohttp.ClientTimeout(total=10))

        async def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                async with self.http.get("/-/ready") as resp:  # type: ignore[union-attr]
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await poll_until(ready, bool, 20, "Prometheus ready", every=0.05)

    async def api(self, path: str, **params: str) -> Any:
        assert self.http is not None
        async with self.http.get(f"/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector results of ``expr`` as [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = await self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    async def value(self, expr: str) -> float | None:
        """The single value ``expr`` has now, None while it has none."""
        result = await self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    async def firing(self) -> list[dict[str, str]]:
        """Labels of the firing alerts (alertname included)."""
        data = await self.api("alerts")
        return [a["labels"] for a in data["alerts"] if a["state"] == "firing"]

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
async def prometheus(tmp_path):
    server = Prometheus(tmp_path)
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.stop(), 15)
