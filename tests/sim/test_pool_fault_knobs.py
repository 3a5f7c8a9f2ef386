"""The sim pool's byte- and answer-level fault knobs, seen from a raw client."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.sim import RawClient, SimPool, SimPoolConfig
from proxy.sim.pool_conn import UNKNOWN_ID_BASE, WRONG_ID_OFFSET

BAD_SUBMIT = ["w", "nojob", "00", "00000000", "00000000"]  # judged (rejected): still answered


@pytest.fixture
async def pool_client():
    pool = SimPool(SimPoolConfig(name="knobs", seed=3))
    await pool.start()
    client = await RawClient.connect("127.0.0.1", pool.port)
    try:
        assert (await client.call("mining.subscribe", []))["result"]
        assert (await client.call("mining.authorize", ["w", "x"]))["result"] is True
        yield pool, client
    finally:
        client.close()
        await asyncio.wait_for(pool.stop(), 5)


def _answers(client: RawClient) -> list[dict]:
    return [m for m in client.received if isinstance(m, dict) and "method" not in m]


@pytest.mark.parametrize("mode", ["offset", "string", "null"])
async def test_wrong_ids(pool_client, mode):
    pool, client = pool_client
    pool.wrong_ids(mode)
    sent = client.send("mining.submit", BAD_SUBMIT)
    expected = {"offset": sent + WRONG_ID_OFFSET, "string": str(sent), "null": None}[mode]
    answer = await client.recv(lambda m: isinstance(m, dict) and "method" not in m
                               and m.get("id") != 2 and m.get("error"))
    assert answer["id"] == expected and pool.wrong_id_answers == 1
    pool.heal()
    assert (await client.call("mining.submit", BAD_SUBMIT))["error"]  # right id again


async def test_duplicate_and_unknown_id_answers(pool_client):
    pool, client = pool_client
    pool.duplicate_answers()
    pool.unknown_id_answers()
    sent = client.send("mining.submit", BAD_SUBMIT)
    await client.response(sent)
    await client.response(sent)  # the same answer twice
    extra = await client.recv(lambda m: isinstance(m, dict) and isinstance(m.get("id"), int)
                              and m["id"] > UNKNOWN_ID_BASE)
    assert "method" not in extra
    assert pool.duplicate_answers_sent == 1 and pool.unknown_answers_sent == 1


async def test_slow_drip_delivers_whole_lines_slowly(pool_client):
    pool, client = pool_client
    pool.slow_drip(interval=0.002, chunk=4)
    started = time.monotonic()
    answer = await client.call("client.get_version", [])  # unknown to the pool: an error line
    assert answer["error"] and time.monotonic() - started >= 0.01
    assert pool.dripped_bytes >= 40
    pool.stop_drip()
    started = time.monotonic()
    await client.call("mining.submit", BAD_SUBMIT)
    assert time.monotonic() - started < 1.0


async def test_half_open_reads_and_writes_nothing_until_ended(pool_client):
    pool, client = pool_client
    pool.half_open()
    late = await RawClient.connect("127.0.0.1", pool.port)  # the kernel still accepts
    try:
        msg_id = late.send("mining.subscribe", [])
        client.send("mining.submit", BAD_SUBMIT)
        with pytest.raises(TimeoutError):
            await late.response(msg_id, timeout=0.3)
        assert not late.closed.is_set() and not client.closed.is_set()
        pool.end_half_open()  # what arrived meanwhile is read now
        assert (await late.response(msg_id))["result"]
    finally:
        late.close()


async def test_partial_line_then_close(pool_client):
    pool, client = pool_client
    before = len(client.received)
    assert pool.partial_line_then_close() == 1
    async with asyncio.timeout(5):
        await client.closed.wait()
    assert len(client.received) == before  # half a line never becomes a message
    assert client.framer.pending > 0


async def test_over_long_line(pool_client):
    pool, client = pool_client
    pool.send_over_long_line(70_000)
    shown = await client.notification("client.show_message")
    assert len(shown["params"][0]) >= 69_000
