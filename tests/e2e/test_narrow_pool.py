"""Real mainnet blocks through a pool of extranonce2_size 4 (most pools), whether the rig
connects after the pool is up or before any pool is known, and the pool rebuilds the real
block from what the proxy forwards:

- default settings: the layout is chosen from the pool (1-byte prefix + 3, the fold);
- a fixed 2 + 4 layout, too wide for the pool: the rig is subscribed straight onto the
  pool's own extranonce on a connection of its own (and answered once)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from proxy.config import load_dict
from proxy.net.service import ProxyService
from proxy.sim import wait_until
from proxy.sim.pool import SimPool, SimPoolConfig
from proxy.stratum import messages

from .test_foundation import _read_until as read_until

VECTORS = json.loads((Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
                      / "mainnet_blocks.json").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _read_until(reader: asyncio.StreamReader, predicate, seen: list[dict]) -> dict:
    msg, more = await read_until(reader, predicate, timeout=10.0)
    seen.extend(more)
    return msg


@pytest.mark.parametrize("layout", ["default", "fixed-2+4"])
@pytest.mark.parametrize("rig_first", [False, True], ids=["pool-up-first", "rig-before-pool"])
@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_mainnet_block_through_a_pool_of_extranonce2_size_4(farm, vector, rig_first, layout):
    split = vector["coinbase_split"]
    full = bytes.fromhex(split["extranonce1"] + split["extranonce2"])
    pool_ext1 = full[:-4]
    if layout == "default":  # 1 + 3: the rig's extranonce1 is its prefix, the next byte
        rig_ext1, rig_e2, proxy = full[-4:-3], full[-3:], {}
        prefix_start = full[-4]
    else:  # too wide for the pool: the rig takes the pool's own extranonce1
        rig_ext1, rig_e2 = pool_ext1, full[-4:]
        proxy, prefix_start = {"extranonce_prefix_size": 2, "extranonce2_size": 4}, 0
    port = _free_port()
    pool = SimPool(SimPoolConfig(name="p", port=port, difficulty=1024, job_interval=30.0))
    pool.set_fixed_job(vector["stratum"]["notify_params"], pool_ext1, 4)
    farm.pools["p"] = pool
    if not rig_first:
        await pool.start()
    cfg = load_dict({"proxy": {"listen": "127.0.0.1:0", **proxy}, "api": {"enabled": False},
                     "pools": [{"name": "p", "url": f"stratum+tcp://127.0.0.1:{port}", "user": "farm"}]})
    service = farm.proxy = ProxyService(cfg, prefix_start=prefix_start)
    await service.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    rolled = vector["stratum"]["version_rolling"]
    lines = []
    if rolled:
        lines.append(messages.request(1, "mining.configure",
                                      [["version-rolling"], {"version-rolling.mask": "1fffe000"}]))
    lines += [messages.request(2, "mining.subscribe", ["vector-rig"]),
              messages.request(3, "mining.authorize", ["miner1.worker1", "x"])]
    writer.write(b"".join(lines))
    seen: list[dict] = []
    if rig_first:
        await _read_until(reader, lambda m: m.get("id") == 3, seen)  # authorized; subscribe held
        assert not [m for m in seen if m.get("id") == 2]
        await pool.start()
    sub = await _read_until(reader, lambda m: m.get("id") == 2, seen)
    assert sub["result"][1:] == [rig_ext1.hex(), len(rig_e2)]
    notify = await _read_until(reader, lambda m: m.get("method") == "mining.notify", seen)
    params = vector["stratum"]["submit_params"]
    writer.write(messages.request(4, "mining.submit", ["miner1.worker1", notify["params"][0],
                                                       rig_e2.hex(), *params[3:]]))
    answer = await _read_until(reader, lambda m: m.get("id") == 4, seen)
    assert answer["result"] is True, answer
    await wait_until(lambda: len(pool.shares) == 1, 5, what="the share at the pool")
    share = pool.shares[0]
    assert share.valid, share.reason
    assert share.block_hash_hex == vector["block_hash"]
    # one answer per request, and the layout never changed under the rig
    ids = [m.get("id") for m in seen if "method" not in m]
    assert sorted(ids) == sorted([1, 2, 3, 4] if rolled else [2, 3, 4]), seen
    assert not [m for m in seen if m.get("method") in ("client.reconnect", "mining.set_extranonce")]
    writer.close()
