"""Hashprice in the core: from each pool's job to the view, once per template, never failing a pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import proxy.core.hashprice as hp
from proxy.core.view import CoreView
from proxy.stratum.coinbase import coinbase_from_job

from .harness import connect, make_core, make_notify

VECTORS = json.loads((Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
                      / "mainnet_blocks.json").read_text())


def _vector_job(v: dict, job_id: str = "j1") -> list:
    params = list(v["stratum"]["notify_params"])
    params[0] = job_id
    return params


def _independent_hashprice(v: dict) -> float:
    """From the vector's own fields: the value parsed from the coinbase as in the block and
    the difficulty from its 256-bit target (not nbits)."""
    split = v["coinbase_split"]
    value = coinbase_from_job(bytes.fromhex(split["coinb1"]), bytes.fromhex(split["coinb2"]),
                              len(split["extranonce1"]) // 2 + split["extranonce2_size"]).value_sat
    difficulty = 0xFFFF * 2**208 / int(v["network_target"], 16)
    return value / 1e8 / (difficulty * 2**32) * 86400 * 1e15


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_each_pool_and_the_farm_show_the_hashprice_of_their_job(v):
    core, io, clock = make_core(extranonce_prefix_size=0, extranonce2_size=3)
    primary = connect(core, io.dialed[0], clock)
    sub = v["stratum"]["subscribe_response"]["result"]
    primary.handshake(extranonce1=sub[1], e2_size=sub[2], notify=_vector_job(v))
    backup = connect(core, io.dialed[1], clock)
    backup.handshake()  # the harness's job: coinb1/coinb2 that are no coinbase
    clock.advance(4.0)
    view = CoreView(core)
    pools = {p["name"]: p["hashprice"] for p in view.pools(clock.now)}
    figures = pools["primary"]
    assert figures["reason"] == "" and figures["age_s"] == 4.0
    assert figures["btc_per_ph_day"] == pytest.approx(_independent_hashprice(v), rel=1e-9)
    assert figures["network_difficulty"] == pytest.approx(0xFFFF * 2**208 / int(v["network_target"], 16))
    assert pools["backup"]["btc_per_ph_day"] is None
    assert pools["backup"]["reason"].startswith("coinbase does not parse")
    assert pools["backup"]["network_difficulty"] == 1.0  # nbits 1d00ffff parses
    # the backup's unreadable coinbase cost it nothing: it is as healthy as the primary
    assert {p["name"]: p["state"] for p in view.pools(clock.now)} == {"primary": "healthy",
                                                                      "backup": "healthy"}
    farm = view.status(clock.now)["hashprice"]
    assert farm["pool"] == "primary" and farm["btc_per_ph_day"] == figures["btc_per_ph_day"]
    assert farm["expected_btc_per_day"] == 0.0  # no rigs: no hashrate


def test_the_template_is_parsed_once_and_a_new_value_moves_the_figure(monkeypatch):
    calls = []

    def counting(*args):
        calls.append(args)
        return coinbase_from_job(*args)

    monkeypatch.setattr(hp, "coinbase_from_job", counting)
    core, io, clock = make_core()
    link = connect(core, io.dialed[0], clock)
    coinb2 = "ffffffff01" + (625_000_000).to_bytes(8, "little").hex() + "00" + "00000000"
    coinb1 = ("01000000" + "01" + "00" * 32 + "ffffffff" + f"{4 + 4 + 8:02x}" + "03112233")
    job = ["j1", "11" * 32, coinb1, coinb2, [], "20000000", "1d00ffff", "6553f100", True]
    link.handshake(extranonce1="aabbccdd", e2_size=8, notify=job)
    view = CoreView(core)
    first = view.pool("primary", clock.now)["hashprice"]
    assert first["block_value_sat"] == 625_000_000 and first["reason"] == ""
    for i in range(2, 6):  # the same template again (new job ids): no new parse
        clock.advance(1.0)
        link.feed({"id": None, "method": "mining.notify", "params": [f"j{i}", *job[1:]]})
    assert len(calls) == 1
    assert view.pool("primary", clock.now)["hashprice"]["age_s"] == 0.0
    doubled = coinb2.replace((625_000_000).to_bytes(8, "little").hex(),
                             (1_250_000_000).to_bytes(8, "little").hex())
    link.feed({"id": None, "method": "mining.notify",
               "params": ["j9", job[1], coinb1, doubled, *job[4:]]})
    second = view.pool("primary", clock.now)["hashprice"]
    assert len(calls) == 2 and second["block_value_sat"] == 1_250_000_000
    assert second["btc_per_ph_day"] == pytest.approx(2 * first["btc_per_ph_day"])


def test_before_any_job_the_figure_is_unknown_with_the_reason():
    core, _, clock = make_core()
    view = CoreView(core)
    assert view.pool("primary", clock.now)["hashprice"]["reason"] == "no job from the pool yet"
    farm = view.status(clock.now)["hashprice"]
    assert (farm["reason"], farm["pool"], farm["btc_per_ph_day"]) == ("no active pool", None, None)


def test_notify_with_unparseable_template_is_still_forwarded_to_rigs():
    core, io, clock = make_core()
    link = connect(core, io.dialed[0], clock)
    link.handshake(notify=make_notify("j1", tag="ff"))
    conn = io.dialed[0]
    assert conn.current_job is not None and conn.pool.hashprice.price is None
