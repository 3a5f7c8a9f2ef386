"""GET /api/v1/rigs sorting, the part of the rigs API the dashboard's table adds (no browser)."""

from __future__ import annotations

import pytest

from proxy.sim import wait_until
from tests.api.conftest import api  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(60)


async def test_rigs_sort_by_each_column_with_filter_and_pages(api):  # noqa: F811
    await api.pool("primary")
    await api.pool("backup")
    await api.start()
    await api.fleet(6, worker_prefix="b")
    await api.fleet(6, worker_prefix="a")
    await wait_until(lambda: api.view("primary")["rigs"] == 12, 10, what="all rigs placed")

    async def workers(query: str) -> list[str]:
        page = await api.get(f"/api/v1/rigs?{query}")
        return [r["worker"] for r in page["rigs"]]

    everyone = sorted(f"{p}.{i:04d}" for p in "ab" for i in range(6))
    assert await workers("sort=worker") == everyone
    assert await workers("sort=-worker") == everyone[::-1]
    page = await api.get("/api/v1/rigs?sort=-worker&limit=5&offset=5")
    assert page["total"] == 12 and page["sort"] == "-worker"
    assert [r["worker"] for r in page["rigs"]] == everyone[::-1][5:10]
    # the filter applies before the sort and the page
    assert await workers("q=a.&sort=-worker&limit=3") == ["a.0005", "a.0004", "a.0003"]
    assert await workers("pool=primary&sort=worker&limit=2") == everyone[:2]

    await wait_until(lambda: all(r["shares"]["accepted"] for r in api.rigs()), 10, what="every rig shared")
    for key in ("hashrate", "difficulty", "accepted", "last_share", "remote", "pool", "id"):
        rigs = (await api.get(f"/api/v1/rigs?sort={key}"))["rigs"]
        assert len(rigs) == 12, key
    by_rate = [r["hashrate"] for r in (await api.get("/api/v1/rigs?sort=-hashrate"))["rigs"]]
    assert by_rate == sorted(by_rate, reverse=True) and by_rate[0] > 0
    ages = [r["last_share_age_s"] for r in (await api.get("/api/v1/rigs?sort=last_share"))["rigs"]]
    assert ages == sorted(ages)
    ports = [int(r["remote"].rsplit(":", 1)[1]) for r in (await api.get("/api/v1/rigs?sort=remote"))["rigs"]]
    assert ports == sorted(ports)  # numerically, not as text

    for bad in ("sort=nope", "sort=--worker", "sort=worker;drop"):
        err = await api.call("GET", f"/api/v1/rigs?{bad}", 400)
        assert err["error"].startswith("sort: unknown key") and "hashrate" in err["error"], err
