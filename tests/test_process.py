"""The proxy as a process: SIGTERM drains and flushes, SIGKILL loses no committed history."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp

from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.sim.rigs import RigFleet

ROOT = Path(__file__).resolve().parents[1]


def _config(pool_port: int, db: Path, sample_s: float) -> str:
    return (f'[proxy]\nlisten = "127.0.0.1:0"\nhistory_db = "{db}"\nhistory_sample_s = {sample_s}\n'
            'shutdown_drain_s = 5\n'
            '[api]\nlisten = "127.0.0.1:0"\ntoken = "process-test-token"\n'
            f'[[pools]]\nname = "a"\nurl = "stratum+tcp://127.0.0.1:{pool_port}"\nuser = "u"\n')


class ProxyProcess:
    """``python -m proxy run`` with its log read line by line."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.rig_port = 0
        self.api_port = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "-c", str(self.config), cwd=ROOT,
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = await self.read_until("API listening on", 20)
        self.api_port = int(re.search(r":(\d+)/", line).group(1))
        line = await self.read_until("listening for rigs on", 10)
        self.rig_port = int(line.rsplit(":", 1)[1])

    async def read_until(self, needle: str, timeout: float) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError("proxy exited; its log:\n" + "".join(self.lines))
                self.lines.append(line)
                if needle in line:
                    return line

    async def read_rest(self, timeout: float) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async with asyncio.timeout(timeout):
            while line := (await self.proc.stderr.readline()).decode():
                self.lines.append(line)

    async def history(self) -> dict:
        url = f"http://127.0.0.1:{self.api_port}/api/v1/history?minutes=60"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
            return await resp.json()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_sigterm_waits_for_pool_answers_and_flushes_history(tmp_path):
    # the pool answers each share 0.8 s late, so shares are in flight at SIGTERM
    pool = SimPool(SimPoolConfig(name="a", difficulty=2**-24, answer_delay=0.8))
    await pool.start()
    cfg = tmp_path / "proxy.toml"
    db = tmp_path / "history.db"
    cfg.write_text(_config(pool.port, db, 60.0))  # no periodic sample: only the final flush
    proxy = ProxyProcess(cfg)
    fleet = None
    try:
        await proxy.start()
        fleet = RigFleet("127.0.0.1", proxy.rig_port, 20, share_interval=0.05, seed=7)
        await fleet.start()
        await fleet.wait_until(lambda: fleet.submitted >= 200, 20, "200 submits")
        fleet.pause_mining()
        await fleet.drain()
        assert fleet.unanswered() == 0
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGTERM)
        drained = await proxy.read_until("drain done", 10)
        async with asyncio.timeout(15):
            rc = await proxy.proc.wait()
        await proxy.read_rest(5)
        assert rc == 0, "".join(proxy.lines)
        answered, unanswered = map(int, re.search(r"(\d+) in-flight shares answered by the pools, "
                                                  r"(\d+) unanswered", drained).groups())
        assert answered > 0, drained  # the drain had something to wait for
        assert unanswered == 0, drained
        assert any("stopped" in line for line in proxy.lines[-3:]), proxy.lines[-5:]
        # every submit a rig sent was answered before the proxy closed it
        assert fleet.lost == 0 and fleet.submitted == fleet.answered
        # the final counters reached the history: the proxy counted every answer the pool sent
        with sqlite3.connect(db) as sql:
            (accepted,) = sql.execute("SELECT sum(accepted) FROM pool_minutes WHERE pool='a'").fetchone()
            (lost,) = sql.execute("SELECT sum(lost) FROM pool_minutes WHERE pool='a'").fetchone()
        assert accepted == pool.accepted == pool.submits > 0
        assert lost == 0
    finally:
        if fleet is not None:
            await fleet.stop()
        await proxy.kill()
        await pool.stop()


async def test_sigkill_loses_no_committed_history(tmp_path):
    pool = SimPool(SimPoolConfig(name="a", difficulty=2**-24))
    await pool.start()
    cfg = tmp_path / "proxy.toml"
    cfg.write_text(_config(pool.port, tmp_path / "history.db", 0.2))
    first, second = ProxyProcess(cfg), ProxyProcess(cfg)
    fleet = None
    try:
        await first.start()
        fleet = RigFleet("127.0.0.1", first.rig_port, 10, share_interval=0.05, seed=8)
        await fleet.start()
        await fleet.wait_until(lambda: pool.accepted >= 100, 20, "100 shares accepted")
        before = await first.history()  # answering flushes: these rows are committed
        assert before["backend"] == "sqlite"
        assert sum(row["accepted"] for row in before["rows"]) > 0
        await first.kill()  # SIGKILL: no shutdown code runs
        await fleet.stop()
        fleet = None
        await second.start()
        after = await second.history()
        rows_after = {(row["minute"], row["pool"]): row for row in after["rows"]}
        for row in before["rows"]:
            kept = rows_after.get((row["minute"], row["pool"]))
            assert kept is not None, f"history row {row} lost in the crash"
            assert kept["accepted"] >= row["accepted"]
        events_after = {(e["time"], e["kind"]) for e in after["events"]}
        assert before["events"], "the first run logged events (pool connected, ...)"
        for event in before["events"]:
            assert (event["time"], event["kind"]) in events_after, f"event {event} lost in the crash"
    finally:
        if fleet is not None:
            await fleet.stop()
        await first.kill()
        await second.kill()
        await pool.stop()
