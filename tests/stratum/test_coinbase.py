"""The coinbase value, the network difficulty and the hashprice on real mainnet blocks.

The expected figures are computed independently in this file, never taken from the code
under test:

* block value: ``_block_coinbase_value`` reads the coinbase out of the vector's *raw block*
  (``raw_block_hex``: header, tx count, first transaction, witness included for segwit blocks;
  block 702861 is stored without its raw block, so its coinbase as serialized in the block)
  with its own reader (io.BytesIO + struct), and sums its outputs; the outputs the parser
  found in coinb1/coinb2 are also re-serialized and must be the tail of the real coinbase
  whose double-SHA256 is the block's coinbase txid;
* difficulty: diff1 target / the vector's ``network_target`` (the 256-bit target as hex);
* hashprice: Decimal arithmetic at 60 digits, in another order than the code's Fractions.
"""

from __future__ import annotations

import io
import json
import struct
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.hashprice import HashpriceMeter, expected_btc_per_day, hashprice, nbits_difficulty
from proxy.stratum import work
from proxy.stratum.coinbase import Coinbase, coinbase_from_job, parse_coinbase

VECTORS = json.loads((Path(__file__).resolve().parents[2].parent / "shared" / "vectors"
                      / "mainnet_blocks.json").read_text())
IDS = [v["name"] for v in VECTORS]


def _compact(stream: io.BytesIO) -> int:
    (first,) = stream.read(1)
    if first < 0xFD:
        return first
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    return int.from_bytes(stream.read(size), "little")


def _block_coinbase_value(v: dict) -> tuple[int, int]:
    """(sum of the coinbase outputs in satoshi, number of outputs), read from the raw block
    (its first transaction), or for the one vector stored without its 1.4 MB raw block from
    the coinbase as serialized in the block (witness included)."""
    if v["raw_block_hex"]:
        stream = io.BytesIO(bytes.fromhex(v["raw_block_hex"]))
        stream.seek(80)  # the header
        assert _compact(stream) == v["tx_count"]
    else:
        stream = io.BytesIO(bytes.fromhex(v["coinbase"]["tx_hex_as_in_block"]))
    stream.read(4)  # version
    marker = stream.read(2)
    if marker != b"\x00\x01":  # not a witness serialization: those bytes were the input count..
        stream.seek(-2, io.SEEK_CUR)
    for _ in range(_compact(stream)):
        stream.read(36)
        stream.read(_compact(stream))
        stream.read(4)
    total = 0
    count = _compact(stream)
    for _ in range(count):
        (value,) = struct.unpack("<q", stream.read(8))
        total += value
        stream.read(_compact(stream))
    return total, count


def _extranonce_size(v: dict) -> int:
    split = v["coinbase_split"]
    return len(bytes.fromhex(split["extranonce1"])) + split["extranonce2_size"]


def _parsed(v: dict) -> Coinbase:
    split = v["coinbase_split"]
    return coinbase_from_job(bytes.fromhex(split["coinb1"]), bytes.fromhex(split["coinb2"]),
                             _extranonce_size(v))


def _subsidy(height: int) -> int:
    return (50 * 100_000_000) >> (height // 210_000)


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_coinbase_value_is_the_sum_of_the_real_blocks_coinbase_outputs(v):
    parsed = _parsed(v)
    assert parsed.reason == "" and parsed.value_sat is not None
    expected, count = _block_coinbase_value(v)
    assert parsed.value_sat == expected
    assert len(parsed.outputs) == count
    # the block pays at least the subsidy of its height; the rest is fees (0 <= fees < 1 BTC here)
    assert 0 <= parsed.value_sat - _subsidy(v["height"]) < 100_000_000
    # the outputs found are byte for byte the real ones: re-serialized, they end the real
    # coinbase (before the locktime), and that transaction hashes to the block's coinbase txid
    tx = bytes.fromhex(v["coinbase"]["tx_hex_nonwitness"])
    assert work.block_hash_hex(work.dsha256(tx)) == v["coinbase"]["txid"]
    outputs = bytes([len(parsed.outputs)]) + b"".join(
        struct.pack("<Q", value) + bytes([len(script)]) + script for value, script in parsed.outputs)
    assert tx[:-4].endswith(outputs)


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_the_witness_serialization_of_the_real_coinbase_parses_to_the_same_value(v):
    tx = bytes.fromhex(v["coinbase"]["tx_hex_as_in_block"])
    parsed = parse_coinbase(tx)
    assert parsed.segwit == v["coinbase"]["is_segwit_serialized"]
    assert parsed.value_sat == _block_coinbase_value(v)[0]


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_difficulty_from_nbits_matches_the_blocks_target(v):
    nbits = int(v["stratum"]["notify_params"][6], 16)
    assert nbits == int(v["header"]["bits"], 16)
    target = int(v["network_target"], 16)
    assert nbits_difficulty(nbits) == Fraction(0xFFFF * 2**208, target)


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_hashprice_matches_an_independent_decimal_computation(v):
    value_sat, _ = _block_coinbase_value(v)
    target = int(v["network_target"], 16)
    with localcontext() as ctx:
        ctx.prec = 60
        # blocks a day for 1 PH/s = 1e15 * 86400 / expected hashes per block
        hashes_per_block = Decimal(0xFFFF) * Decimal(2) ** 208 / Decimal(target) * Decimal(2) ** 32
        blocks_per_ph_day = Decimal(10) ** 15 * 86400 / hashes_per_block
        expected = blocks_per_ph_day * Decimal(value_sat) / Decimal(10) ** 8
    nbits = int(v["header"]["bits"], 16)
    got = hashprice(_parsed(v).value_sat, nbits_difficulty(nbits))
    with localcontext() as ctx:
        ctx.prec = 60
        exact = Decimal(got.numerator) / Decimal(got.denominator)
        assert abs(exact - expected) <= expected * Decimal("1e-40")
    meter = HashpriceMeter()
    split = v["coinbase_split"]
    meter.job(bytes.fromhex(split["coinb1"]), bytes.fromhex(split["coinb2"]), _extranonce_size(v),
              nbits, 5.0)
    figures = meter.view(7.5, hashrate_hs=200e15)
    assert figures["reason"] == "" and figures["age_s"] == 2.5
    assert figures["btc_per_ph_day"] == pytest.approx(float(expected), rel=1e-12)
    assert figures["block_value_sat"] == value_sat
    assert figures["expected_btc_per_day"] == pytest.approx(200 * float(expected), rel=1e-12)


def test_wrong_extranonce_size_or_a_cut_coinbase_is_unknown_with_the_reason():
    v = VECTORS[2]
    split = v["coinbase_split"]
    coinb1, coinb2 = bytes.fromhex(split["coinb1"]), bytes.fromhex(split["coinb2"])
    size = _extranonce_size(v)
    for bad in (coinbase_from_job(coinb1, coinb2, size + 1), coinbase_from_job(coinb1, coinb2[:-1], size),
                coinbase_from_job(coinb1[:20], coinb2, size), coinbase_from_job(coinb1, coinb2, -1)):
        assert bad.value_sat is None and bad.reason and not bad.outputs
    # a split that puts the extranonce outside the input script (here: over the sequence)
    # is refused even though the bytes still parse as a transaction
    tx = coinb1 + bytes(size) + coinb2
    script_end = 42 + v["coinbase"]["scriptsig_len"]
    assert parse_coinbase(tx).value_sat is not None
    moved = coinbase_from_job(tx[:script_end], tx[script_end + 4:], 4)
    assert moved.value_sat is None and "not inside the input script" in moved.reason
    meter = HashpriceMeter()
    meter.job(coinb1, coinb2[:-1], size, int(v["header"]["bits"], 16), 1.0)
    view = meter.view(2.0)
    assert view["btc_per_ph_day"] is None and view["reason"].startswith("coinbase does not parse")
    assert view["network_difficulty"] is not None
    meter.job(coinb1, coinb2, size, 0x1D800000, 3.0)  # negative compact target
    assert meter.view(3.0)["reason"].startswith("nbits 1d800000")


def test_expected_earnings_scale_with_hashrate():
    assert expected_btc_per_day(3e15, 0.0005) == pytest.approx(0.0015)
    assert nbits_difficulty(0x1D00FFFF) == 1
    assert nbits_difficulty(0) is None and nbits_difficulty(0xFF7FFFFF) is None


@settings(max_examples=400, deadline=None)
@given(coinb1=st.binary(max_size=300), coinb2=st.binary(max_size=300),
       size=st.integers(min_value=-4, max_value=300), nbits=st.integers(0, 2**32 - 1))
def test_garbage_jobs_never_raise(coinb1, coinb2, size, nbits):
    parsed = coinbase_from_job(coinb1, coinb2, size)
    assert isinstance(parsed, Coinbase)
    assert (parsed.value_sat is None) == bool(parsed.reason)
    meter = HashpriceMeter()
    meter.job(coinb1, coinb2, size, nbits, 1.0)
    view = meter.view(1.0, 1e15)
    assert (view["btc_per_ph_day"] is None) == bool(view["reason"])


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_real_coinbases_never_raise(data):
    v = data.draw(st.sampled_from(VECTORS))
    tx = bytearray(bytes.fromhex(v["coinbase"]["tx_hex_as_in_block"]))
    for _ in range(data.draw(st.integers(1, 4))):
        tx[data.draw(st.integers(0, len(tx) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(tx)))
    parsed = parse_coinbase(bytes(tx[:cut]))
    assert (parsed.value_sat is None) == bool(parsed.reason)
    if parsed.value_sat is not None:
        assert 0 <= parsed.value_sat <= 21_000_000 * 100_000_000
