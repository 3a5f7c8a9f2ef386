"""PROXY protocol on the rig port (issue 17, item 2): the rig's real address from a trusted
balancer's header goes to the rigs table and the per-address limits; an untrusted source, a
malformed or a missing header closes that connection and costs the other rigs nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy.net.proxyproto import v2_header
from proxy.sim import wait_until
from proxy.stratum import messages


async def _rig(port: int, prelude: bytes, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader,
                                                                              asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(prelude + messages.request(1, "mining.subscribe", ["pp-rig"])
                 + messages.request(2, "mining.authorize", ["farm.pp", "x"]))
    return reader, writer


async def _answers(reader: asyncio.StreamReader, n: int) -> list[dict]:
    out = []
    async with asyncio.timeout(10):
        while len(out) < n:
            line = await reader.readline()
            if not line:
                raise ConnectionError(f"closed after {out}")
            msg = json.loads(line)
            if "method" not in msg:
                out.append(msg)
    return out


async def _closed(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(10):
        return await reader.read() == b""


@pytest.fixture
async def proxied(farm):
    await farm.pool("primary")
    return await farm.start_proxy(proxy_protocol="v2", trusted_proxies=["127.0.0.1/32"],
                                  max_rigs_per_address=2)


async def test_the_real_address_reaches_the_rigs_table(proxied, farm):
    svc = proxied
    reader, writer = await _rig(svc.port, v2_header(("10.20.30.40", 51000), ("127.0.0.1", svc.port)))
    answers = await _answers(reader, 2)
    assert all(a["error"] is None for a in answers)
    await wait_until(lambda: any(r["remote"] == "10.20.30.40:51000" for r in farm.rigs()), 5,
                     what="the rig under its real address")
    writer.close()


async def test_limits_apply_to_the_real_address(proxied, farm):
    svc = proxied
    header = v2_header(("10.0.0.7", 1000), ("127.0.0.1", svc.port))
    first = [await _rig(svc.port, header) for _ in range(2)]
    for reader, _ in first:
        await _answers(reader, 2)
    # a third from the same real address is over max_rigs_per_address (2), though every
    # connection comes from the balancer's one address
    reader, writer = await _rig(svc.port, header)
    assert await _closed(reader)
    other, other_writer = await _rig(svc.port, v2_header(("10.0.0.8", 1000), ("127.0.0.1", svc.port)))
    assert all(a["error"] is None for a in await _answers(other, 2))
    for _, w in [*first, (other, other_writer)]:
        w.close()


@pytest.mark.parametrize("case", ["untrusted source", "no header", "malformed header"])
async def test_bad_headers_close_that_connection_only(proxied, farm, case):
    svc = proxied
    good, good_writer = await _rig(svc.port, v2_header(("10.1.1.1", 2000), ("127.0.0.1", svc.port)))
    await _answers(good, 2)
    if case == "untrusted source":
        reader, writer = await _rig(svc.port, v2_header(("10.6.6.6", 1), ("127.0.0.1", svc.port)),
                                    source="127.0.0.2")
    elif case == "no header":
        reader, writer = await _rig(svc.port, b"")
    else:
        reader, writer = await _rig(svc.port, b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd")
    assert await _closed(reader)
    good_writer.write(messages.request(3, "mining.extranonce.subscribe", []))
    (answer,) = await _answers(good, 1)
    assert answer["id"] == 3 and answer["result"] is True
    assert [r["remote"] for r in farm.rigs()] == ["10.1.1.1:2000"]
    good_writer.close()
    writer.close()
