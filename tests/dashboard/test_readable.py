"""The dashboard reads like a report: events in words with human units, rounded figures, times
relative, numbers right-aligned; at 1440x900 and on a 390x844 phone (screenshots saved).

The events are real: the proxy runs a [rental] section against the simulated marketplace with a
target above what its rigs deliver, so the backfill controller decides, places an order and says
so with the raw fields the issue quoted (limit_hs 16201.400563584757, price 2000.000000000000).
"""

from __future__ import annotations

import re
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.async_api import expect

from proxy.sim._wait import wait_until
from proxy.sim.market import SimMarket, SimMarketConfig
from tests.api.conftest import SIM_MARKET_ENV, sim_rental
from tests.dashboard.conftest import RIGS

pytestmark = pytest.mark.timeout(60)

ORDER_LIMIT_HS = 20_000  # the market's largest order: the deficit is bigger, the order is this

# what a cell of a numeric column starts with: 1,234 · 0.20 / 8.32 ms · 36.6 kH/s · 5.96e−8 · 100%
NUMBER_FIRST = r"^[−-]?[\d.,]+(e[−-]?\d+)?(\s|%|$)"
MISALIGNED_NUMBERS = """(pattern) => {
  const numeric = new RegExp(pattern);
  const right = (node) => ["right", "end"].includes(getComputedStyle(node).textAlign);
  const bad = new Set();
  for (const table of document.querySelectorAll("table.table")) {
    const heads = table.querySelectorAll("thead th");
    for (const cell of table.querySelectorAll("tbody td")) {
      const first = cell.innerText.split("\\n")[0].trim();
      if (!numeric.test(first)) continue;
      if (!right(cell)) bad.add(`${table.id} cell "${first}"`);
      const head = heads[cell.cellIndex];
      if (head && !right(head)) bad.add(`${table.id} header "${head.innerText}"`);
    }
  }
  return [...bad];
}"""
NUMERIC_CELLS = """(pattern) => [...document.querySelectorAll("table.table tbody td")]
  .filter((c) => new RegExp(pattern).test(c.innerText.split("\\n")[0].trim())).length"""


async def _renting_farm(dash, tmp_path, monkeypatch) -> SimMarket:
    for name, value in SIM_MARKET_ENV.items():
        monkeypatch.setenv(name, value)
    market = SimMarket(SimMarketConfig(market_price=Decimal("0.000000000002"), min_amount=Decimal("0.0001"),
                                       max_limit=Decimal(ORDER_LIMIT_HS), activation_delay_s=0.2))
    await market.start()
    api = dash.api
    await api.pool("primary")
    await api.pool("backup")
    await api.start(history_interval=0.25, rental=sim_rental(
        market.url, str(tmp_path / "ledger.sqlite3"), target_hashrate="100 kH/s", trigger_deficit=0.05,
        trigger_after_s=0.5, recover_after_s=5, min_order_s=0, pool="backup"))
    await api.fleet(RIGS)
    await wait_until(lambda: market.orders, 15, what="the backfill order")
    return market


async def test_events_in_words_with_human_units_at_both_sizes(dash, tmp_path, monkeypatch):
    market = await _renting_farm(dash, tmp_path, monkeypatch)
    try:
        for width, height in ((1440, 900), (390, 844)):
            page = await dash.open(width, height)
            await page.locator("#event-filter").select_option("rental")
            placed = page.locator("#events li[data-kind=rental_order_placed] .ev-text")
            # the raw event: limit_hs 20000.0, price "2000.000000000000", amount_btc "0.00010000"
            await expect(placed).to_have_text(re.compile(
                r"^Order [0-9a-f]{8} placed: 20\.0 kH/s at 2000 BTC/PH/day, 0\.0001 BTC in escrow$"))
            decision = page.locator("#events li[data-kind=rental_decision] .ev-text",
                                    has_text="Under target").first
            await expect(decision).to_have_text(re.compile(
                r"^Under target: \d+(\.\d+)? [kM]?H/s delivered of 100 kH/s"
                r" · market 2000 BTC/PH/day, hashprice 0\.000\d+ BTC/PH/day$"))
            await expect(page.locator("#stat-rental-sub")).to_contain_text("budget left 0.00")
            events = await page.locator("#events").inner_text()
            # nothing of the raw fields: names, unrounded floats, 12-decimal prices
            assert not re.search(r"_hs|_btc|\bcode\b|\baction\b|\d{5,}\.\d|\.\d{9,}", events), events
            # times relative, the clock in the tooltip
            first_time = page.locator("#events time").first
            await expect(first_time).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
            await expect(first_time).to_have_attribute("title", re.compile(r"^\d\d:\d\d:\d\d$"))

            await page.locator("#event-filter").select_option("all")
            await expect(page.locator("#pools-body tr")).to_have_count(2)
            assert await page.evaluate(NUMERIC_CELLS, NUMBER_FIRST) >= 12  # the check below has material
            assert await page.evaluate(MISALIGNED_NUMBERS, NUMBER_FIRST) == []
            if width < 500:
                overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px"
            await page.locator("#events-card").scroll_into_view_if_needed()
            await dash.screenshot(page, f"dashboard-rental-events-{width}x{height}")
            await dash.screenshot(page, f"dashboard-rental-{width}-full", full_page=True)
    finally:
        await market.stop()


def test_readme_shows_the_dashboard_during_a_failover():
    """The README's picture is the failover test's screenshot (`make screenshot` refreshes it)."""
    root = Path(__file__).resolve().parents[2]
    picture = root / "docs" / "dashboard-failover.png"
    assert "](docs/dashboard-failover.png)" in (root / "README.md").read_text()
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1440, 900)  # the IHDR chunk: width, height
    assert len(data) < 300_000
