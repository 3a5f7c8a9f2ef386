"""Pool side over real sockets: TLS with verification, worker names forwarded upstream."""

from __future__ import annotations

import asyncio
import ssl
import subprocess

import pytest

from tests.faults.conftest import _pipe

from .conftest import pool_view


def _make_cert(tmp_path):
    cert, key = tmp_path / "pool.pem", tmp_path / "pool.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


async def _tls_relay(cert, key, target_port: int):
    """A TLS front for the sim pool, as a pool's TLS terminator would be."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


async def _until(predicate, timeout: float):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("trusted", [True, False], ids=["ca_file", "untrusted"])
async def test_tls_pool_is_verified(farm, tmp_path, trusted):
    cert, key = _make_cert(tmp_path)
    secure = await farm.pool("secure")
    await farm.pool("plain")
    relay = await _tls_relay(cert, key, secure.port)
    try:
        tls_port = relay.sockets[0].getsockname()[1]
        pools = [{"name": "secure", "priority": 0, "url": f"stratum+ssl://127.0.0.1:{tls_port}",
                  **({"ca_file": str(cert)} if trusted else {})},
                 {"name": "plain", "priority": 1}]
        svc = await farm.start_proxy(pools=pools)
        fleet = await farm.fleet(5, share_interval=0.3)
        if trusted:
            await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"secure") == 5, 10, "tls")
            await _until(lambda: secure.accepted >= 10, 10)
            assert all(s.valid for s in secure.shares)
        else:
            await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"plain") == 5, 10, "plain")
            view = pool_view(svc, "secure")
            assert view["state"] == "down" and "certificate" in view["last_error"], view["last_error"]
            assert secure.total_connections == 0
        await fleet.drain(10)
        assert fleet.disconnects == 0
    finally:
        relay.close()


async def test_worker_names_forwarded_upstream(farm):
    pool = await farm.pool("p")
    await farm.start_proxy(forward_worker_names=True)
    fleet = await farm.fleet(4, share_interval=0.3, worker_prefix="site")
    await _until(lambda: pool.accepted >= 20, 15)
    await fleet.drain(10)
    expected = {f"farm.{i:04d}" for i in range(4)}  # rig worker "site.0003" -> "<pool user>.0003"
    assert expected <= pool.authorized_workers
    assert {s.worker for s in pool.shares} <= expected | {"farm"}
    assert {s.worker for s in pool.shares if s.valid} & expected
    assert pool.connections == 1  # still one aggregated connection
