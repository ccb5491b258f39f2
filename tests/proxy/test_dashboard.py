"""The status page in a real browser: Debian's Chromium driven by Playwright, against a real
proxy and two real backends on 127.0.0.1.

Chromium is required under CI (``CI`` or ``LBREC_REQUIRE_BROWSER`` set): the test fails there
when it is missing, and skips elsewhere. Screenshots go to ``$LBREC_ARTIFACTS`` (default
``tests/artifacts/``, git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbrec.proxy import admin as admin_module
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc

CHROMIUM = os.environ.get("LBREC_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("LBREC_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")
# Chromium quiet and offline: no first-run, no background or component traffic, no QUIC.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEALTH = {"interval": 0.2, "timeout": 0.5, "rise": 1, "fall": 2}


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LBREC_CHROMIUM)"
    return None


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_BROWSER"):
            pytest.fail(f"the dashboard test needs Chromium and CI must run it: {missing}")
        pytest.skip(f"needs Chromium: {missing} (run scripts/setup.sh)")
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile for every run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


async def _traffic(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    """A steady mix: mostly 200s, some slower ones, a few 404s and 500s."""
    paths = ["/x", "/x", "/slow?s=0.02", "/x", "/status/404", "/x", "/slow?s=0.005", "/x"]
    n = 0
    while not stop.is_set():
        path = "/status/500" if n % 37 == 36 else paths[n % len(paths)]
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + path) as response:
                await response.read()
        n += 1
        await asyncio.sleep(0.01)


async def _total_requests(page: Any) -> int:
    text = await page.inner_text('[data-field="total-requests"]')
    return int(text)


async def test_dashboard_in_chromium(
    page: Any,
    backends: BackendFactory,
    proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Short buckets so that a few seconds of traffic draw a chart (the figures stay per second).
    monkeypatch.setattr(admin_module, "BUCKET_S", 0.1)
    monkeypatch.setattr(admin_module, "_STATE_POLL_S", 0.05)
    a, b = await backends("backend1"), await backends("backend2")
    doc = config_doc(
        [("backend1", a.url, 2), ("backend2", b.url, 3)],
        health=HEALTH,
        generation="37e0734210b6",
        revision={
            "commit": "4f2c9e1a7b3d5c6e8f901234567890abcdef1234",
            "author": "Ops Person <ops@example.org>",
            "message": "backend2: weight 3\n\nmore text",
            "time": "2026-12-02T10:15:00+00:00",
            "source": "git@example.org:ops/lb.git",
        },
    )
    p = await proxy(doc)
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(http, p.url, stop))
    # The page runs under its Content-Security-Policy (issue 20 finding 11): any script or
    # style the policy blocks is noted here, and must not be.
    await page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', e => window.__cspViolations"
        ".push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));"
    )
    try:
        await asyncio.sleep(6.0)  # chart points before the page opens
        response = await page.goto(p.admin_url + "/")
        assert response is not None and response.status == 200
        policy = await response.header_value("content-security-policy")
        assert policy is not None and "script-src 'sha256-" in policy
        assert await response.header_value("x-frame-options") == "DENY"
        await page.wait_for_selector('[data-backend="backend1"][data-state="up"]')
        await page.wait_for_selector('[data-backend="backend2"][data-state="up"]')
        await page.evaluate("window.__marker = 'set at load'")
        loaded_at = await page.evaluate("window.lbrecDashboard.loadedAt")

        # Figures update in place: the request counter grows, the page is the same document.
        # (Polled from here: wait_for_function evaluates a string, which the policy forbids.)
        before = await _total_requests(page)
        for _ in range(100):
            if await _total_requests(page) > before:
                break
            await asyncio.sleep(0.1)
        assert await _total_requests(page) > before, "the request counter did not move in 10 s"
        assert await page.evaluate("window.__marker") == "set at load"
        assert await page.evaluate("window.lbrecDashboard.loadedAt") == loaded_at
        assert await page.evaluate("window.lbrecDashboard.refreshes") >= 1

        # A stopped backend shows as down: fall x interval for the proxy to mark it (a refused
        # connection fails at once), plus one page refresh, plus slack for a loaded machine.
        await b.stop()
        bound_ms = (HEALTH["fall"] * HEALTH["interval"] + HEALTH["timeout"]) * 1000
        await page.wait_for_selector(
            '[data-backend="backend2"][data-state="down"]', timeout=bound_ms + 2 * 2000 + 3000
        )
        check = await page.inner_text('[data-backend="backend2"] .check')
        assert "L4CON connection refused in " in check, check
        assert "ClientConnectorError" not in check and "ssl:default" not in check
        assert "L7OK 200 in " in await page.inner_text('[data-backend="backend1"] .check')
        assert "4f2c9e1a" in await page.inner_text("#revision")
        await asyncio.sleep(2.0)  # more chart points while backend2 is down
        assert await page.evaluate("window.__marker") == "set at load"
        # backend1 has had answers: its latency chart has a line
        assert await page.locator('[data-backend="backend1"] .chart svg path').count() >= 2
        # The split bars are drawn with style attributes: the policy lets them through.
        assert await page.evaluate("window.__cspViolations") == []

        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # 480 px wide: the page reflows, nothing scrolls sideways.
        await page.set_viewport_size({"width": 480, "height": 900})
        await page.wait_for_timeout(300)
        widths = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"horizontal scroll at 480 px: {widths}"
        await page.screenshot(path=str(ARTIFACTS / "dashboard-480.png"), full_page=True)
    finally:
        stop.set()
        await traffic
