"""The work maths on the mainnet vectors: difficulty <-> target, nbits, achieved difficulty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.stratum import messages, work

VECTORS = json.loads((Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
                      / "mainnet_blocks.json").read_text())


def test_diff1_target_and_fractional_difficulty():
    assert work.difficulty_to_target(1) == 0x00000000FFFF << 208
    assert work.difficulty_to_target(1024) == int(VECTORS[0]["share_check"]["share_target"], 16)
    # fractional difficulty: exact for any float, capped at the largest 256-bit number
    assert work.difficulty_to_target(0.5) == (0xFFFF << 208) * 2
    assert work.difficulty_to_target(2**-40) == work.MAX_TARGET
    assert work.target_to_difficulty(work.difficulty_to_target(16383.75)) == pytest.approx(16383.75)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_block_hash_nbits_and_achieved_difficulty(vector):
    s = vector["stratum"]
    n = messages.parse_notify(s["notify_params"])
    sub = messages.parse_submit(s["submit_params"])
    mask = int(s["version_rolling"]["mask"], 16) if s["version_rolling"] else 0
    version = work.rolled_version(n.version, sub.version_bits, mask)
    digest = work.share_hash(n.coinb1, bytes.fromhex(s["subscribe_response"]["result"][1]),
                             sub.extranonce2, n.coinb2, n.merkle_branch, version, n.prevhash,
                             n.nbits, sub.ntime, sub.nonce)
    assert work.block_hash_hex(digest) == vector["block_hash"]
    value = work.hash_to_int(digest)
    assert work.nbits_to_target(n.nbits) == int(vector["network_target"], 16)
    assert value <= work.nbits_to_target(n.nbits)  # a real block meets the network target
    assert work.hash_difficulty(value) == pytest.approx(vector["share_check"]["achieved_difficulty"])
    if s["version_rolling"]:  # the un-rolled header is a different, failing hash
        unrolled = work.share_hash(n.coinb1, bytes.fromhex(s["subscribe_response"]["result"][1]),
                                   sub.extranonce2, n.coinb2, n.merkle_branch, n.version, n.prevhash,
                                   n.nbits, sub.ntime, sub.nonce)
        assert work.hash_to_int(unrolled) > work.difficulty_to_target(1024)
