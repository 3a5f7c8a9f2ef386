"""The dashboard against a real proxy: sim pools, a rig fleet, headless Chromium.

Every wait is on a page condition (Playwright's expect), never a fixed sleep.
"""

from __future__ import annotations

import time

import pytest
from playwright.async_api import expect

from proxy.store.history import HistoryStore
from tests.dashboard.conftest import RIGS, TOKEN, start_farm

pytestmark = pytest.mark.timeout(60)


async def test_page_shows_pools_rigs_and_active_pool(dash, tmp_path):
    await start_farm(dash.api, history_db=str(tmp_path / "history.db"))
    page = await dash.open(1440, 900)

    await expect(page.locator("#stat-active")).to_have_text("primary")
    rows = page.locator("#pools-body tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_have_attribute("data-pool", "primary")
    await expect(rows.nth(1)).to_have_attribute("data-pool", "backup")
    primary = page.locator('#pools-body tr[data-pool="primary"]')
    await expect(primary.locator(".badge")).to_have_text("healthy")
    await expect(primary.locator(".chip-active")).to_have_text("active")
    await expect(page.locator('#pools-body tr[data-pool="backup"] .chip-active')).to_have_count(0)
    await expect(page.locator("#rigs-total")).to_have_text(f"{RIGS} connected")
    await expect(page.locator("#stat-rental")).to_have_text("off")
    await expect(page.locator("#stat-target")).to_have_text("no target")
    # the hashrate history chart drew columns for the pool carrying the farm
    await expect(page.locator('#history-chart rect[data-pool="primary"]').first).to_be_attached()
    # shares flow: the rigs' accepted counts show up in the pools table
    await expect(primary.locator("td[data-col=accepted]")).not_to_have_text("0")
    await expect(page.locator("#banner")).to_be_hidden()

    await dash.screenshot(page, "dashboard-1440x900")
    await dash.screenshot(page, "dashboard-1440-full", full_page=True)

    narrow = await dash.open(390, 844)
    await expect(narrow.locator("#stat-active")).to_have_text("primary")
    await expect(narrow.locator('#history-chart rect[data-pool="primary"]').first).to_be_attached()
    # nothing but the tables' own scroll boxes is wider than the phone
    overflow = await narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 390px"
    await dash.screenshot(narrow, "dashboard-390x844")
    await dash.screenshot(narrow, "dashboard-390-full", full_page=True)


async def test_killing_the_primary_shows_the_switch_live(dash):
    await start_farm(dash.api)
    page = await dash.open()
    await expect(page.locator("#stat-active")).to_have_text("primary")
    await page.evaluate("window.__samePage = 'yes'")

    primary = dash.api.pools["primary"]
    primary.reset_all()
    await primary.refuse()

    switch = page.locator("#events li[data-kind=pool_switch]", has_text="primary → backup")
    await expect(switch).to_be_visible()
    await expect(switch.locator(".ev-reason")).to_contain_text("primary")
    await expect(page.locator('#pools-body tr[data-pool="primary"] .badge')).to_have_text("down")
    await expect(page.locator('#pools-body tr[data-pool="backup"] .chip-active')).to_be_visible()
    await expect(page.locator("#stat-active")).to_have_text("backup")
    await expect(page.locator("#stat-active-sub")).to_contain_text("on a backup")
    assert await page.evaluate("window.__samePage") == "yes"  # updated in place, not reloaded
    await dash.screenshot(page, "dashboard-after-failover-1440x900")


async def _set_priority(page, pool: str, priority: int) -> None:
    await page.locator(f'#pools-body tr[data-pool="{pool}"] button[data-action=edit]').click()
    dialog = page.locator("#edit-dialog")
    await expect(dialog).to_be_visible()
    await dialog.locator("#edit-priority").fill(str(priority))
    await dialog.locator("#edit-apply").click()
    await expect(dialog).to_be_hidden()


async def test_priority_change_needs_the_token(dash):
    await start_farm(dash.api)
    page = await dash.open()
    message = page.locator("#message")

    # no token: the API refuses and the page shows its reason; nothing changes
    await _set_priority(page, "backup", -1)
    await expect(message).to_have_class("message error")
    await expect(message).to_contain_text("HTTP 401")
    await expect(message).to_contain_text("missing bearer token")
    assert dash.active() == ["primary"]
    assert dash.api.view("backup")["priority"] == 1

    # a wrong token: refused with the API's words
    await page.locator("#token-input").fill("not-the-token")
    await page.locator("#token-form button[type=submit]").click()
    await _set_priority(page, "backup", -1)
    await expect(message).to_contain_text("invalid bearer token")
    assert dash.active() == ["primary"]

    # the right token, entered once: the change applies and the active pool flips on the page
    await page.locator("#token-forget").click()
    await page.locator("#token-input").fill(TOKEN)
    await page.locator("#token-form button[type=submit]").click()
    await _set_priority(page, "backup", -1)
    await expect(message).to_have_class("message ok")
    await expect(page.locator("#stat-active")).to_have_text("backup")
    await expect(page.locator('#pools-body tr[data-pool="backup"] .chip-active')).to_be_visible()
    await expect(page.locator("#pools-body tr").first).to_have_attribute("data-pool", "backup")
    await expect(page.locator("#events li[data-kind=pool_changed]").first).to_contain_text("priority 1→-1")
    assert dash.active() == ["backup"]

    # kept for the browser session: still set after a reload, and still accepted
    await page.reload()
    await expect(page.locator("#token-set")).to_be_visible()
    await _set_priority(page, "primary", -2)
    await expect(page.locator("#stat-active")).to_have_text("primary")
    assert dash.active() == ["primary"]


async def test_destructive_actions_ask_first(dash):
    await start_farm(dash.api)
    page = await dash.open()
    await page.locator("#token-input").fill(TOKEN)
    await page.locator("#token-form button[type=submit]").click()
    drain = page.locator('#pools-body tr[data-pool="primary"] button[data-action=drain]')
    confirm = page.locator("#confirm-dialog")

    await drain.click()
    await expect(confirm).to_be_visible()
    await expect(confirm).to_contain_text(f"{RIGS} rigs move")
    await confirm.locator("#confirm-cancel").click()
    await expect(confirm).to_be_hidden()
    assert not dash.api.view("primary")["draining"]

    await drain.click()
    await confirm.locator("#confirm-ok").click()
    await expect(page.locator('#pools-body tr[data-pool="primary"] .chip')).to_contain_text(["draining"])
    await expect(page.locator("#stat-active")).to_have_text("backup")
    assert dash.api.view("primary")["draining"]

    # a refused reload shows the API's reason (the config file was made invalid)
    dash.api.config_path.write_text("[proxy]\nlisten = 'nowhere'\n")
    await page.locator("#reload-btn").click()
    await confirm.locator("#confirm-ok").click()
    await expect(page.locator("#message")).to_contain_text("HTTP 400")


async def test_banner_when_the_proxy_is_unreachable(dash):
    await start_farm(dash.api)
    page = await dash.open()
    banner = page.locator("#banner")
    await expect(banner).to_be_hidden()

    await page.route("**/api/v1/**", lambda route: route.abort("connectionrefused"))
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Proxy unreachable")
    await dash.screenshot(page, "dashboard-unreachable-1440x900")

    await page.unroute("**/api/v1/**")
    await expect(banner).to_be_hidden()
    await expect(page.locator("#updated")).to_contain_text("live")


async def test_rigs_table_sorts_filters_and_pages(dash):
    await start_farm(dash.api)
    page = await dash.open()
    first_worker = page.locator("#rigs-body tr").first.locator("td").first

    await page.locator("#rig-limit").select_option("25")
    await expect(page.locator("#rigs-body tr")).to_have_count(25)
    await expect(page.locator("#rig-range")).to_have_text(f"1–25 of {RIGS}")
    await page.locator("#rig-next").click()
    await expect(page.locator("#rigs-body tr")).to_have_count(RIGS - 25)
    await expect(page.locator("#rig-range")).to_have_text(f"26–{RIGS} of {RIGS}")
    await expect(page.locator("#rig-next")).to_be_disabled()

    worker_header = page.locator('#rigs-table th[data-sort="worker"]')
    await expect(worker_header).to_have_attribute("aria-sort", "ascending")
    await worker_header.click()
    await expect(worker_header).to_have_attribute("aria-sort", "descending")
    await expect(page.locator("#rig-range")).to_have_text(f"1–25 of {RIGS}")  # back to page 1
    await expect(first_worker).to_have_text(f"rig.{RIGS - 1:04d}")

    await page.locator("#rig-search").fill("rig.0007")
    await expect(page.locator("#rigs-body tr")).to_have_count(1)
    await expect(first_worker).to_have_text("rig.0007")
    await expect(page.locator("#rigs-total")).to_have_text("1 matching")
    await page.locator("#rig-search").fill("no-such-rig")
    await expect(page.locator("#rigs-body")).to_contain_text("No rig matches")


async def test_history_chart_reads_what_an_earlier_run_stored(dash, tmp_path):
    """The chart comes from the SQLite history, so a restart keeps it: rows an earlier run wrote
    (here a pool since removed from the config) are drawn by a freshly started proxy."""
    db = str(tmp_path / "history.db")
    earlier = int(time.time() // 60) * 60 - 20 * 60
    store = HistoryStore(db).open()
    store.write([{"minute": earlier + i * 60, "pool": "old-pool", "accepted": 10, "rejected": 0,
                  "timeouts": 0, "lost": 0, "accepted_difficulty": 10.0, "hashrate": 2000.0, "rigs": 30,
                  "latency_p50_ms": 2.0, "latency_p99_ms": 9.0, "state": "healthy"} for i in range(5)],
                [{"seq": 1, "time": earlier + 30.0, "kind": "pool_switch", "from_pools": [],
                  "to_pools": ["old-pool"], "reason": "startup: first pool ready", "rigs_moved": 30}])
    store.close()

    await start_farm(dash.api, history_db=db)
    page = await dash.open()
    await expect(page.locator('#history-chart rect[data-pool="old-pool"]')).to_have_count(5)
    await expect(page.locator('#history-chart rect[data-pool="primary"]').first).to_be_attached()
    await expect(page.locator("#history-legend")).to_contain_text("old-pool (removed)")
    await expect(page.locator("#history-legend")).to_contain_text("kept across restarts")
    # the events timeline also shows the earlier run's decisions (from the same store)
    await expect(page.locator("#events li", has_text="none → old-pool")).to_be_visible()


async def test_rental_card_reads_either_shape_of_the_rentals_api(dash):
    """/api/v1/rentals answers {"enabled": false} without a [rental] section and the full
    controller state with one; the header renders both (here served by the browser's router)."""
    await start_farm(dash.api)
    # the controller's view: delivered_hs is own + rented, each order says what it rents
    renting = {"provider": "sim", "state": "renting", "target_hs": 2000.0, "delivered_hs": 1650.0,
               "deficit_hs": 350.0, "budget_left_btc": "0.0042",
               "ordered_hs": 600.0, "rented_hs": 550.0,
               "orders": [{"id": "o-1", "state": "ACTIVE", "limit_hs": 600.0, "delivered_hs": 550.0},
                          {"id": "o-0", "state": "CANCELLED", "limit_hs": 900.0, "delivered_hs": 0.0,
                           "closed": 1.0}]}
    answer = {"body": renting}

    async def rentals(route):
        await route.fulfill(json=answer["body"])

    page = await dash.open(rigs=RIGS)
    await page.route("**/api/v1/rentals", rentals)
    await expect(page.locator("#stat-rental")).to_have_text("renting")
    # the farm's hashprice (the status API's, from the active pool's job) next to the rental
    earns = (await dash.api.get("/api/v1/status"))["hashprice"]["btc_per_ph_day"]
    assert 0.0001 < earns < 0.01  # the sim pool's mainnet-like template
    await expect(page.locator("#stat-rental-sub")).to_have_text(
        f"sim · order 600 H/s, delivering 550 H/s · deficit 350 H/s · hashprice {earns:.4g} BTC/PH/day"
        " · budget left 0.0042 BTC")
    await expect(page.locator("#stat-target")).to_contain_text("target 2.00 kH/s")
    await expect(page.locator("#history-chart line.target")).to_have_count(1)

    answer["body"] = {"enabled": False}
    await expect(page.locator("#stat-rental")).to_have_text("off")
    await expect(page.locator("#stat-target")).to_have_text("no target")
