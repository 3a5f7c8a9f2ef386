"""The farm control plane over two live instances: sums, merged views, changes everywhere."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp
import pytest

from proxy.config import ConfigError
from proxy.farm.config import load_farm_dict
from proxy.farm.view import InstanceState, farm_pools, farm_status, merge_history, merge_rig_pages

from .conftest import FARM_TOKEN, ROOT, TOKEN


async def _call(farm, method: str, path: str, token: str | None = FARM_TOKEN, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{farm.api_port}{path}", headers=headers, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_farm_sums_instances_and_propagates_changes(cluster):
    await cluster.pool("primary")
    await cluster.pool("backup")
    one = await cluster.instance("proxy-1")
    two = await cluster.instance("proxy-2")
    fleet_one = await cluster.start_fleet(30, port=one.port, share_interval=0.1)
    fleet_two = await cluster.start_fleet(20, port=two.port, share_interval=0.1, worker_prefix="b")
    farm = await cluster.start_farm()
    await fleet_one.wait_until(
        lambda: one.view.totals()["accepted"] >= 150 and two.view.totals()["accepted"] >= 100, 20,
        "both instances mining")
    await farm.wait_polled(1, 10)

    # sums: of exactly what each instance reported in the same poll
    status_code, status = await _call(farm, "GET", "/api/v1/status")
    assert status_code == 200 and status["farm"] is True
    reported = {i.name: i.status for i in farm.instances}
    assert status["rigs_connected"] == 50
    assert status["hashrate"] == pytest.approx(sum(s["hashrate"] for s in reported.values()))
    assert status["hashrate"] > 0 and all(s["hashrate"] > 0 for s in reported.values())
    assert status["active_pools"] == ["primary"]
    _, pools = await _call(farm, "GET", "/api/v1/pools")
    primary = next(p for p in pools["pools"] if p["name"] == "primary")
    assert primary["rigs"] == 50 and set(primary["instances"]) == {"proxy-1", "proxy-2"}
    assert primary["accepted"] == sum(next(p for p in i.pools if p["name"] == "primary")["accepted"]
                                      for i in farm.instances)
    _, rigs = await _call(farm, "GET", "/api/v1/rigs", params={"limit": "10", "sort": "worker"})
    assert rigs["total"] == 50 and len(rigs["rigs"]) == 10
    assert [r["worker"] for r in rigs["rigs"]] == sorted(r["worker"] for r in rigs["rigs"])
    assert rigs["rigs"][0]["worker"].startswith("b.") and rigs["rigs"][0]["instance"] == "proxy-2"
    _, events = await _call(farm, "GET", "/api/v1/events")
    assert {e["instance"] for e in events["events"]} >= {"proxy-1", "proxy-2"}

    # a change without the farm's token is refused and reaches no instance
    code, refused = await _call(farm, "PATCH", "/api/v1/pools/backup", token=None, json={"priority": -1})
    assert code == 401 and "token" in refused["error"]
    code, refused = await _call(farm, "PATCH", "/api/v1/pools/backup", token="wrong", json={"priority": -1})
    assert code == 401
    assert one.view.active_pools() == ["primary"] and two.view.active_pools() == ["primary"]
    # the instances' own validation error comes back as is
    code, bad = await _call(farm, "PATCH", "/api/v1/pools/backup", json={"priority": "high"})
    assert code == 400 and "priority" in bad["error"]
    code, _ = await _call(farm, "PATCH", "/api/v1/pools/nosuch", json={"priority": 1})
    assert code == 404

    # with the token: both instances flip to the backup
    code, done = await _call(farm, "PATCH", "/api/v1/pools/backup", json={"priority": -1})
    assert code == 200 and done["ok"] and sorted(done["applied"]) == ["proxy-1", "proxy-2"]
    assert one.view.active_pools() == ["backup"] and two.view.active_pools() == ["backup"]
    await fleet_one.wait_until(lambda: fleet_one.rigs_with_job_containing(b"backup") == 30, 10, "moved")
    await fleet_two.wait_until(lambda: fleet_two.rigs_with_job_containing(b"backup") == 20, 10, "moved")
    assert fleet_one.disconnects == 0 and fleet_two.disconnects == 0

    # proxy-2 goes away: the change reaches proxy-1 now and proxy-2 when it is back
    api_port_two = two.api_port
    await fleet_two.stop()
    await two.stop()
    await farm.wait_polled(1, 10)
    code, partial = await _call(farm, "PATCH", "/api/v1/pools/primary", json={"weight": 3})
    assert code == 202 and partial["applied"] == ["proxy-1"] and partial["queued_for_retry"] == ["proxy-2"]
    assert one.view.pool("primary", one.now())["weight"] == 3
    _, status = await _call(farm, "GET", "/api/v1/status")
    assert status["instances_up"] == 1 and status["rigs_connected"] == 30
    assert [c["instance"] for c in status["changes_pending"]] == ["proxy-2"]
    back = await cluster.instance("proxy-2", api_port=api_port_two)
    await fleet_one.wait_until(lambda: not farm.pending, 10, "the queued change delivered")
    assert back.view.pool("primary", back.now())["weight"] == 3
    assert any(e["kind"] == "farm_change_retried" and e["result"] == "applied"
               for e in farm.events.recent(50))
    await farm.wait_polled(2, 10)
    assert farm.status()["instances_up"] == 2


def _inst(name: str, up: bool, hashrate: float, rigs: int, pools: list[dict]) -> InstanceState:
    inst = InstanceState(name, f"http://{name}")
    inst.up = up
    inst.status = {"hashrate": hashrate, "rigs_connected": rigs, "rigs_working": rigs,
                   "active_pools": ["a"], "counters": {"accepted": rigs}, "pools": {"a": pools[0]["state"]}}
    inst.pools = pools
    return inst


def test_down_instance_is_not_counted():
    pool = {"name": "a", "state": "healthy", "priority": 0, "weight": 1, "enabled": True,
            "rigs": 5, "hashrate": 10.0, "accepted": 7, "rejected": {"stale": 1}, "lost": {},
            "latency_ms": {"p50": 1.0, "p99": 3.0}}
    down_pool = {**pool, "state": "down", "latency_ms": {"p50": 9.0, "p99": 30.0}}
    instances = [_inst("x", True, 10.0, 5, [pool]), _inst("y", False, 1e9, 500, [down_pool])]
    status = farm_status("farm", instances, now=100.0, started=50.0, writes_enabled=True)
    assert status["hashrate"] == 10.0 and status["rigs_connected"] == 5
    assert status["instances_up"] == 1
    y = next(i for i in status["instances"] if i["name"] == "y")
    assert y["hashrate"] == 0.0 and y["last_known_hashrate"] == 1e9
    rows = farm_pools(instances)
    assert rows[0]["accepted"] == 7 and rows[0]["latency_ms"]["p99"] == 3.0
    instances[1].up = True
    rows = farm_pools(instances)
    assert rows[0]["state"] == "down" and rows[0]["reason"].startswith("down on y")
    assert rows[0]["rejected"] == {"stale": 2} and rows[0]["latency_ms"]["p99"] == 30.0


def test_rig_pages_and_history_merge():
    pages = [("x", {"total": 3, "rigs": [{"worker": "c"}, {"worker": "a"}, {"worker": "e"}]}),
             ("y", {"total": 2, "rigs": [{"worker": "b"}, {"worker": "d"}]})]
    merged = merge_rig_pages(pages, offset=1, limit=3, sort="worker")
    assert merged["total"] == 5 and [r["worker"] for r in merged["rigs"]] == ["b", "c", "d"]
    assert merged["rigs"][0]["instance"] == "y"
    history = merge_history([
        ("x", {"rows": [{"minute": 60, "pool": "a", "accepted": 2, "hashrate": 5.0, "latency_p99_ms": 1.0,
                         "state": "healthy"}], "events": [{"time": 2.0, "kind": "k"}]}),
        ("y", {"rows": [{"minute": 60, "pool": "a", "accepted": 3, "hashrate": 7.0, "latency_p99_ms": 4.0,
                         "state": "down"}], "events": [{"time": 1.0, "kind": "k"}]})])
    row = history["rows"][0]
    assert row["accepted"] == 5 and row["hashrate"] == 12.0 and row["latency_p99_ms"] == 4.0
    assert row["state"] == "down" and row["instances"] == ["x", "y"]
    assert [e["instance"] for e in history["events"]] == ["y", "x"]


def test_farm_config_errors_name_the_field():
    ok = {"instances": [{"name": "a", "api": "http://127.0.0.1:1"}]}
    assert load_farm_dict(ok).instances[0].name == "a"
    for data, field in [
        ({"instances": []}, "instances"),
        ({"instances": [{"name": "a", "api": "ftp://x"}]}, "instances[0].api"),
        ({"instances": [{"name": "a", "api": "http://h:1"}, {"name": "a", "api": "http://h:2"}]},
         "instances[1].name"),
        ({"farm": {"listen": "0.0.0.0:8090"}, **ok}, "farm.token"),
        ({"farm": {"poll_s": 0}, **ok}, "farm.poll_s"),
        ({"farm": {"bogus": 1}, **ok}, "farm: Object contains unknown field `bogus`"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_farm_dict(data)
        assert str(err.value).startswith(field), (field, str(err.value))


async def test_farm_command_serves_and_stops(cluster, tmp_path):
    await cluster.pool("primary")
    inst = await cluster.instance("proxy-1")
    cfg = tmp_path / "farm.toml"
    cfg.write_text(f'[farm]\nlisten = "127.0.0.1:0"\ntoken = "{FARM_TOKEN}"\npoll_s = 0.2\n'
                   f'[[instances]]\nname = "proxy-1"\napi = "http://127.0.0.1:{inst.api_port}"\n'
                   f'token = "{TOKEN}"\n')
    check = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", "check-config", str(cfg),
                                                 cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    out, _ = await check.communicate()
    assert check.returncode == 0 and b"proxy-1: http://127.0.0.1:" in out
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "farm", "-c", str(cfg), cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        async with asyncio.timeout(20):
            while not (match := re.search(rb"farm API listening on http://127.0.0.1:(\d+)/",
                                          await proc.stderr.readline())):
                pass
        port = int(match.group(1))
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/api/v1/status") as r:
            status = await r.json()
        assert status["farm"] is True and status["instances_up"] == 1
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
