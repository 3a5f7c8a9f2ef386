"""The dashboard pointed at the farm control plane shows the whole farm and steers it."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.dashboard.conftest import ARTIFACTS, browser  # noqa: F401 - the fixture

from .conftest import FARM_TOKEN

pytestmark = pytest.mark.timeout(90)


async def test_dashboard_on_the_farm(cluster, browser):  # noqa: F811
    await cluster.pool("primary")
    await cluster.pool("backup")
    one = await cluster.instance("proxy-1")
    two = await cluster.instance("proxy-2")
    await cluster.start_fleet(12, port=one.port)
    await cluster.start_fleet(8, port=two.port, worker_prefix="b")
    farm = await cluster.start_farm()
    errors: list[str] = []
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{farm.api_port}/")
        await expect(page.locator("#stat-rigs")).to_have_text("20", timeout=10_000)
        await expect(page.locator("#stat-active")).to_have_text("primary")
        await expect(page.locator("#pools-body tr")).to_have_count(2)
        # the rigs table is the merged one: every instance's rigs, each naming its instance
        await expect(page.locator("#rigs-total")).to_have_text("20 connected")
        await expect(page.locator("#main")).to_contain_text("proxy-2")

        # a priority change from the page goes through the farm to both instances
        await page.locator("#token-input").fill(FARM_TOKEN)
        await page.locator("#token-form button[type=submit]").click()
        await page.locator('#pools-body tr[data-pool="backup"] button[data-action=edit]').click()
        dialog = page.locator("#edit-dialog")
        await dialog.locator("#edit-priority").fill("-1")
        await dialog.locator("#edit-apply").click()
        await expect(page.locator("#stat-active")).to_have_text("backup")
        assert one.view.active_pools() == ["backup"] and two.view.active_pools() == ["backup"]

        # an instance dies: the page follows without a reload and counts only what answers
        await two.stop()
        await expect(page.locator("#stat-rigs")).to_have_text("12", timeout=10_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "farm-1440x900.png"))
        assert not errors, errors
    finally:
        await context.close()
