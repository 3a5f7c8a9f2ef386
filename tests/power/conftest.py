"""Fixtures of the power suite: one real upsd (dummy-ups) for the suite, one UPS per test."""

from __future__ import annotations

import itertools

import pytest

from proxy.power.nutproto import Power

from .upsd_fixture import RealUpsd

UPS_NAMES = tuple(f"ups{i}" for i in range(1, 17))


@pytest.fixture(scope="session")
def upsd_server(tmp_path_factory):
    server = RealUpsd(tmp_path_factory.mktemp("nut"), UPS_NAMES)
    try:
        server.start()
        server.free = itertools.count()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def upsd(upsd_server):
    """The shared upsd, running (a test may kill it), and a UPS of this test's own (on mains)."""
    upsd_server.ups = UPS_NAMES[next(upsd_server.free)]
    if upsd_server.upsd is None:  # an earlier test killed it: back, serving this UPS again
        await upsd_server.start_upsd()
        await upsd_server.wait_power(upsd_server.ups, Power.ONLINE, 10)
    yield upsd_server
