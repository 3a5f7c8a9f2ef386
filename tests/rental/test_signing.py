"""NiceHash request signing: fixed vectors of our own making (NiceHash publishes none), the
simulator's check, and no secret in the logs."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from proxy.rental.nicehash import NiceHashProvider
from proxy.rental.provider import AuthFailed, Destination
from proxy.rental.signing import sign, verify
from proxy.sim.market import SimMarket, SimMarketConfig

VECTOR = dict(
    key="apikey123", secret="apisecret456", org="org789", time_ms="1700000000000", nonce="nonce-abc"
)


def test_get_vector():
    assert (
        sign(
            VECTOR["key"],
            VECTOR["secret"],
            VECTOR["time_ms"],
            VECTOR["nonce"],
            VECTOR["org"],
            "GET",
            "/main/api/v2/hashpower/myOrders",
            "algorithm=SHA256&market=EU",
        )
        == "apikey123:e4b137424c7153768ecf12957f4dc5660e194478ec72c6487bc2d2c543eb796d"
    )


def test_post_vector():
    assert (
        sign(
            VECTOR["key"],
            VECTOR["secret"],
            VECTOR["time_ms"],
            VECTOR["nonce"],
            VECTOR["org"],
            "POST",
            "/main/api/v2/hashpower/order/",
            "",
            b'{"market":"EU","algorithm":"SHA256"}',
        )
        == "apikey123:850e3e0c1a8e3b9df16eeeb73ac8eadcfbedeaa3137945bd1ebf5d8ed202105e"
    )


def test_verify_rejects_any_change():
    args = (
        VECTOR["key"],
        VECTOR["secret"],
        VECTOR["time_ms"],
        VECTOR["nonce"],
        VECTOR["org"],
        "POST",
        "/main/api/v2/hashpower/order/",
        "",
        b'{"a":1}',
    )
    good = sign(*args)
    assert verify(good, *args)
    assert not verify(good, *args[:-1], b'{"a": 1}')  # body must be byte-identical
    assert not verify(good, *args[:6], "/main/api/v2/hashpower/order", "", b'{"a":1}')


async def test_wrong_secret_gets_error_2000_and_no_secret_is_logged(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "very-secret-value-123"
    async with SimMarket(SimMarketConfig(secret=secret)) as market:
        bad = NiceHashProvider(market.url, "sim-key", "wrong-secret-456", "sim-org", backoff_s=0.01)
        with pytest.raises(AuthFailed) as info:
            await bad.active_orders()
        assert info.value.code == 2000
        assert market.auth_failures == 2  # the client resynced its clock and retried exactly once
        await bad.close()
        good = NiceHashProvider(market.url, "sim-key", secret, "sim-org", backoff_s=0.01)
        pool_id = await good.ensure_pool(Destination("p", "127.0.0.1", 3333, "acct.w", "pool-pass-789"))
        order = await good.place_order(
            limit_hs=1000, pool_id=pool_id, price=Decimal(10**12), amount=Decimal("0.01"), idempotency_key="k"
        )
        assert order.state == "pending" and order.limit_hs == 1000
        assert "wrong-secret-456" not in repr(bad) and secret not in repr(good)
        await good.close()
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert caplog.records, "the client logs what it does"
    for leaked in (secret, "wrong-secret-456", "pool-pass-789"):
        assert leaked not in text
