"""Issue 23 on the status page: /-/stats has a row per route (features, paused, answers,
refusals, compression, affinity), and Chromium draws it under the page's
Content-Security-Policy."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _browser_missing

from .conftest import BackendFactory, ProxyFactory, RunningProxy
from .features_support import curl, routed_doc

SHOP = "shop.example.com"


async def _start(proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path) -> RunningProxy:
    web = await backends("web")
    routes: list[dict[str, Any]] = [
        {"host": SHOP, "backends": ["web"], "rate_limit": {"requests": 2, "per": "1m"}},
        {"host": "plain.example.com", "backends": ["web"]},
    ]
    running = await proxy(routed_doc([("web", web.url, 1)], routes))
    port = running.info.listen[1]
    for _ in range(3):
        await curl(port, "/", host=SHOP)
    await curl(port, "/", host="plain.example.com")
    await curl(port, "/", host="unknown.example.com")  # no route: 404, counted under *
    (tmp_path / "maintenance.json").write_text(
        '{"version": 1, "routes": {"plain.example.com/": {"since": 1}}}'
    )
    for _ in range(100):
        if running.info.server.gate.state.active:
            break
        await asyncio.sleep(0.05)
    return running


async def test_stats_have_a_row_per_route(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    running = await _start(proxy, backends, tmp_path)
    assert running.info.admin is not None
    stats: Any = (await curl(running.info.admin[1], "/-/stats")).body

    rows = {row["route"]: row for row in json.loads(stats)["routes"]}
    assert set(rows) == {f"{SHOP}/", "plain.example.com/", "*"}
    shop = rows[f"{SHOP}/"]
    assert shop["features"] == ["rate limit"] and not shop["paused"]
    assert shop["status"]["2xx"] == 2 and shop["status"]["4xx"] == 1
    assert shop["refused"] == {"ratelimit": 1}
    assert rows["plain.example.com/"]["paused"] and rows["plain.example.com/"]["features"] == []
    assert rows["*"]["status"]["4xx"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_chromium_draws_the_routes(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test needs Chromium: {missing}")
        pytest.skip(f"needs Chromium: {missing}")
    from playwright.async_api import async_playwright

    running = await _start(proxy, backends, tmp_path)
    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.add_init_script(
                "window.__csp = [];"
                "document.addEventListener('securitypolicyviolation', e => window.__csp"
                ".push(e.violatedDirective));"
            )
            response = await page.goto(running.admin_url + "/")
            assert response is not None and response.status == 200
            await page.wait_for_selector(f'tr[data-route="{SHOP}/"]')
            refused = await page.inner_text(f'tr[data-route="{SHOP}/"] [data-field="refused"]')
            paused = page.locator('tr[data-route="plain.example.com/"] [data-field="paused"]')
            assert refused == "ratelimit 1" and await paused.count() == 1
            assert await page.evaluate("window.__csp") == []
        finally:
            await context.close()
