"""Pool side over real sockets: TLS with verification, worker names forwarded upstream."""

from __future__ import annotations

import pytest

from proxy.sim import wait_until
from tests.farm_fixture import pool_view


@pytest.mark.parametrize("trusted", [True, False], ids=["ca_file", "untrusted"])
async def test_tls_pool_is_verified(farm, certs, trusted):
    secure = await farm.pool("secure")
    await farm.pool("plain")
    front = await farm.tls_front(secure, certs)  # a TLS terminator in front of the sim pool
    pools = [{"name": "secure", "priority": 0, "url": f"stratum+ssl://127.0.0.1:{front.port}",
              **({"ca_file": str(certs["good"][0])} if trusted else {})},
             {"name": "plain", "priority": 1}]
    svc = await farm.start_proxy(pools=pools)
    fleet = await farm.start_fleet(5, share_interval=0.3)
    if trusted:
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"secure") == 5, 10, "tls")
        await wait_until(lambda: secure.accepted >= 10, 10, what="shares through TLS")
        assert all(s.valid for s in secure.shares)
    else:
        await fleet.wait_until(lambda: fleet.rigs_with_job_containing(b"plain") == 5, 10, "plain")
        # the rigs were placed while the first dial was still in its handshake
        await wait_until(lambda: pool_view(svc, "secure")["last_error"], 10, what="the dial's verdict")
        view = pool_view(svc, "secure")
        assert view["state"] == "down" and "certificate" in view["last_error"], view["last_error"]
        assert secure.total_connections == 0
    await fleet.drain(10)
    assert fleet.disconnects == 0


async def test_worker_names_forwarded_upstream(farm):
    pool = await farm.pool("p")
    await farm.start_proxy(forward_worker_names=True)
    fleet = await farm.start_fleet(4, share_interval=0.3, worker_prefix="site")
    await wait_until(lambda: pool.accepted >= 20, 15, what="20 shares accepted")
    await fleet.drain(10)
    expected = {f"farm.{i:04d}" for i in range(4)}  # rig worker "site.0003" -> "<pool user>.0003"
    assert expected <= pool.authorized_workers
    assert {s.worker for s in pool.shares} <= expected | {"farm"}
    assert {s.worker for s in pool.shares if s.valid} & expected
    assert pool.connections == 1  # still one aggregated connection
