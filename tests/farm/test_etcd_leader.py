"""The rental leader, elected through etcd, in separate processes (``python -m proxy run``):
killed, another leads once etcd expires its lease (TTL + 1.1 s here) and adopts its order, with exactly
one marketplace order and the ledger in etcd agreeing; stopped (SIGSTOP) past its TTL, then
continued: it places nothing while the new leader does the renting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from proxy.cluster.etcd import EtcdClient
from proxy.sim import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig
from tests.etcd_fixture import free_port

ROOT = Path(__file__).resolve().parents[2]
DIFF = 2**-22
INTERVAL = 0.25
RIG_HS = DIFF * 2**32 / INTERVAL  # 4096 H/s per sim rig
PER_INSTANCE = 4
TTL = 2
BEAT = 0.3


class Instance:
    """One proxy process with its own rig and API port, its log in a file."""

    def __init__(self, tmp: Path, name: str, text: str, rig_port: int, api_port: int) -> None:
        self.name, self.rig_port, self.api_port = name, rig_port, api_port
        self.config = tmp / f"{name}.toml"
        self.config.write_text(text)
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "run", "-c", str(self.config)],
                                         cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    async def get(self, path: str) -> Any:
        """The instance's API answer, or None when it does not answer within a second."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http, \
                    http.get(f"http://127.0.0.1:{self.api_port}{path}") as resp:
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None


def config_text(name: str, rig_port: int, api_port: int, pool_port: int, etcd: list[str], farm: str,
                market_url: str, target: float) -> str:
    endpoints = ", ".join(f'"{e}"' for e in etcd)
    return f"""
[proxy]
instance = "{name}"
listen = "127.0.0.1:{rig_port}"
[api]
listen = "127.0.0.1:{api_port}"
token = "leader-test-token"
[[pools]]
name = "primary"
url = "stratum+tcp://127.0.0.1:{pool_port}"
user = "acct.farm"
[cluster]
etcd = [{endpoints}]
farm = "{farm}"
lease_ttl_s = {TTL}
publish_s = {BEAT}
timeout_s = 1.0
[rental]
provider = "sim"
api_url = "{market_url}"
target_hashrate = "{target} H/s"
trigger_deficit = 0.15
trigger_after_s = 0.5
recover_after_s = 0.5
min_order_s = 0
max_price = "4000"
daily_budget_btc = "0.01"
window_s = 2.0
interval_s = 0.1
pool = "primary"
"""


async def leader_of(instances: list[Instance]) -> str | None:
    """The leader as the answering instances see it, when they agree and it says it leads."""
    views = [v for v in await asyncio.gather(*(i.get("/api/v1/cluster") for i in instances)) if v]
    names = {v["leader"] for v in views}
    leading = [v["instance"] for v in views if v["leading"]]
    if len(views) == len(instances) and len(names) == 1 and leading == list(names):
        return leading[0]
    return None


async def ledger_rows(etcd: list[str], farm: str) -> dict[str, list[dict]]:
    client = EtcdClient(etcd, 2.0)
    try:
        kvs, _ = await client.range(f"/{farm}/ledger/", prefix=True)
    finally:
        await client.close()
    rows: dict[str, list[dict]] = {"intents": [], "orders": [], "spend": []}
    for kv in kvs:
        rows[kv.key.split("/")[3]].append(json.loads(kv.value))
    return rows


async def test_leader_killed_and_stalled(cluster, etcd, tmp_path):
    pool = await cluster.pool("primary", difficulty=DIFF)
    market = SimMarket(SimMarketConfig(market_price=Decimal("0.000000000002"), activation_delay_s=0.2,
                                       rig_difficulty=DIFF, rig_share_interval=INTERVAL,
                                       min_amount=Decimal("0.0001"), min_limit=Decimal("100"), tick_s=0.05))
    await market.start()
    farm = f"leader-{uuid.uuid4().hex[:6]}"
    target = 4.5 * PER_INSTANCE * RIG_HS  # 18 rigs' worth; the farm has 12: an order from the start
    instances: list[Instance] = []
    try:
        for n in range(3):
            rig, api = free_port(), free_port()
            inst = Instance(tmp_path, f"p{n}", config_text(f"p{n}", rig, api, pool.port, etcd.endpoints, farm,
                                                           market.url, target), rig, api)
            inst.start()
            instances.append(inst)
        await wait_until_async(lambda: leader_of(instances), 20, "three instances up, one leading")
        fleets = {i.name: await cluster.start_fleet(PER_INSTANCE, port=i.rig_port, share_interval=INTERVAL,
                                                    worker_prefix=i.name) for i in instances}
        await wait_until(lambda: market.orders, 15, what="the leader's backfill order")
        (order,) = market.orders.values()
        first = await leader_of(instances)
        assert market.create_calls == 1

        # the leader is killed: another leads within the TTL (and one beat), adopting the order
        dead = next(i for i in instances if i.name == first)
        killed_at = time.monotonic()
        dead.signal(signal.SIGKILL)
        dead.proc.wait(10)
        alive = [i for i in instances if i is not dead]
        second = await wait_until_async(lambda: leader_of(alive), 10, "a new leader")
        took = time.monotonic() - killed_at
        # etcd expires leases in a 500 ms loop; the others campaign when the key goes
        assert took <= TTL + 1.1, f"took {took:.2f}s to lead again (TTL {TTL}s)"
        new = next(i for i in alive if i.name == second)
        view = await wait_until_async(lambda: rentals_with(new, order.id), 10, "the order adopted")
        assert view["leader"] == second if "leader" in view else True
        assert market.create_calls == 1 and len(market.orders) == 1
        rows = await ledger_rows(etcd.endpoints, farm)
        assert [o["id"] for o in rows["orders"]] == [order.id]
        places = [i for i in rows["intents"] if i["kind"] == "place"]
        assert len(places) == 1 and places[0]["order_id"] == order.id and places[0]["state"] == "done"

        # the new leader freezes past its TTL; the third instance leads and adopts the order
        third = next(i for i in alive if i is not new)
        new.signal(signal.SIGSTOP)
        await wait_until_async(lambda: leads(third), 10, "the third instance leading")
        await wait_until_async(lambda: rentals_with(third, order.id), 10, "the order adopted again")
        # give the frozen one a motive: the farm recovers (the order is cancelled), then falls
        # short again, so a new order is due; only the leader may place it.  The frozen
        # instance's registration lapsed with its lease, so only the third one's rigs count.
        extra = await cluster.start_fleet(4 * PER_INSTANCE, port=third.rig_port, share_interval=INTERVAL,
                                          worker_prefix="extra")
        await wait_until(lambda: market.orders[order.id].state not in ("ACTIVE", "PENDING"), 15,
                         what="the order cancelled once the farm recovered")
        await extra.stop()
        continued_at = time.time()
        new.signal(signal.SIGCONT)
        await wait_until(lambda: market.create_calls >= 2, 15, what="a new order for the new deficit")
        await wait_until_async(lambda: not_leading(new), 5, "the continued instance knows it does not lead")
        beats = await beats_of(new)
        await wait_until_async(lambda: beats_after(new, beats + 5), 10, "five more beats")
        assert market.create_calls == 2
        (live,) = [o for o in market.orders.values() if o.state in ("ACTIVE", "PENDING")]
        # the new order is the leader's; the continued instance placed nothing
        placed = await third.get("/api/v1/events?kind=rental_order_placed")
        assert [e["order_id"] for e in placed["events"]] == [live.id]
        placed = await new.get("/api/v1/events?kind=rental_order_placed")
        assert [e for e in placed["events"] if e["time"] >= continued_at] == []
        rows = await ledger_rows(etcd.endpoints, farm)
        assert sorted(o["id"] for o in rows["orders"]) == sorted(market.orders)
        assert all(f.disconnects == 0 for name, f in fleets.items() if name != first)
    finally:
        for inst in instances:
            inst.stop()
        await market.stop()


async def wait_until_async(probe, timeout: float, what: str) -> Any:
    """Poll an async probe every 0.1 s until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def leads(inst: Instance) -> bool:
    view = await inst.get("/api/v1/cluster")
    return bool(view and view["leading"])


async def not_leading(inst: Instance) -> bool:
    view = await inst.get("/api/v1/cluster")
    return bool(view and not view["leading"] and view["leader"] != inst.name)


async def beats_of(inst: Instance) -> int:
    status = await inst.get("/api/v1/cluster")
    return int(status["beats"]) if status else 0


async def beats_after(inst: Instance, n: int) -> bool:
    return await beats_of(inst) >= n


async def rentals_with(inst: Instance, order_id: str) -> dict | None:
    view = await inst.get("/api/v1/rentals")
    return view if view and view.get("active_order") == order_id else None
