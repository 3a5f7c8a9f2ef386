"""Drive the real dashboard page in headless Chromium (Playwright, Debian's /usr/bin/chromium).

No browser is downloaded: Playwright launches the system Chromium that `make test` and
`.ci/run` install (Debian packages chromium, chromium-driver).  When it is missing the
tests FAIL with the reason; they never skip, so a CI box without a browser cannot go green.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import TOKEN, Api

CHROMIUM = os.environ.get("STRATUM_PROXY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
RIGS = 30
WAIT_MS = 10_000

__all__ = ["ARTIFACTS", "RIGS", "TOKEN", "WAIT_MS", "Dashboard"]


def _playwright() -> Any:
    try:
        from playwright import async_api
    except ImportError as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"the dashboard tests need Playwright's Python package ({exc}): "
                    "pip install -e '.[test]' (make test does it)", pytrace=False)
    return async_api


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install the Debian packages with "
                    "'apt-get install -y --no-install-recommends chromium chromium-driver' "
                    "(make test and .ci/run do it when it is missing), or point "
                    "STRATUM_PROXY_CHROMIUM at a Chromium binary", pytrace=False)
    api = _playwright()
    api.expect.set_options(timeout=WAIT_MS)
    async with api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                                            timeout=30_000)
        try:
            yield chromium
        finally:
            await chromium.close()


class Dashboard:
    """Sim pools + proxy with its API + a rig fleet, and pages opened on the dashboard."""

    def __init__(self, api: Api, browser: Any) -> None:
        self.api = api
        self.browser = browser
        self.errors: list[str] = []
        self.contexts: list[Any] = []

    @property
    def url(self) -> str:
        assert self.api.svc is not None
        return f"http://127.0.0.1:{self.api.svc.api_port}/"

    async def open(self, width: int = 1440, height: int = 900, *, rigs: int = RIGS) -> Any:
        """A fresh browser context (empty sessionStorage) on the page, once it shows the farm."""
        from playwright.async_api import expect

        context = await self.browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("request", self._request)
        await page.goto(self.url)
        await expect(page.locator("#stat-rigs")).to_have_text(str(rigs))
        return page

    def _console(self, msg: Any) -> None:
        # an HTTP error the page handles (a refused write, an aborted poll) is logged by the
        # browser as "Failed to load resource"; anything else (a script error, a CSP
        # violation) is a defect of the page
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"console {msg.type}: {msg.text}")

    def _request(self, request: Any) -> None:
        # no external assets: everything the page loads comes from the proxy itself
        if not (request.url.startswith(self.url) or request.url.startswith("data:")):
            self.errors.append(f"request to another origin: {request.url}")

    async def screenshot(self, page: Any, name: str, *, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000, f"{path} looks empty"
        return path

    def active(self) -> list[str]:
        return self.api.active_pools()

    async def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                await context.close()


async def start_farm(api: Api, history_db: str = "", rigs: int = RIGS) -> None:
    await api.pool("primary")
    await api.pool("backup")
    await api.start(history_db=history_db, history_interval=0.25)
    await api.fleet(rigs)


@pytest.fixture
async def dash(tmp_path, browser) -> AsyncIterator[Dashboard]:
    api = Api(tmp_path)
    board = Dashboard(api, browser)
    try:
        yield board
    finally:
        await board.close()
        await asyncio.wait_for(api.close(), 15)
    # after teardown, so a failing assertion above is reported first
    assert not board.errors, board.errors
