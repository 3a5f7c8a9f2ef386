"""Real sockets on loopback: sim pools, the proxy service, sim rig fleets (tests/farm_fixture.py)."""

from __future__ import annotations

import pytest

from tests.farm_fixture import running_farm


@pytest.fixture
async def farm():
    async with running_farm() as f:
        yield f
