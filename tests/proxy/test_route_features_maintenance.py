"""Issue 23 end to end: maintenance by `lbrec pause` / `lbrec resume` (the real commands writing
config/maintenance.json beside the proxy's backends.json), the hold, and a reload of the
features under keep-alive that drops no connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from lbrec.reconciler.commands.cli import main

from .conftest import BackendFactory, ProxyFactory, RunningProxy
from .features_support import curl, routed_doc

SHOP = "shop.example.com"
DESIRED = """\
routes:
  - {host: shop.example.com, backends: [web]}
  - {host: admin.example.com, backends: [web]}
backends:
  - {name: web, port: 8000}
"""


def _project(tmp_path: Path) -> Path:
    """A project whose config/ is the proxy's folder (where its backends.json is)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "desired-state.yaml").write_text(DESIRED)
    (project / "config").symlink_to(tmp_path)
    return project


def lbrec(project: Path, *args: str) -> int:
    return main([*args, "-f", str(project / "desired-state.yaml")])


async def _until(running: RunningProxy, paused: bool) -> None:
    for _ in range(100):
        if running.info.server.gate.state.active == paused:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the proxy did not follow maintenance.json")


async def test_pause_and_resume_one_route_then_all(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    web = await backends("web")
    (tmp_path / "down.html").write_text("<p>{{message}}</p>")
    routes: list[dict[str, Any]] = [
        {
            "host": SHOP,
            "backends": ["web"],
            "maintenance": {"page": "down.html", "retry_after": 60},
        },
        {"host": "admin.example.com", "backends": ["web"]},  # no feature of its own
    ]
    running = await proxy(routed_doc([("web", web.url, 1)], routes))
    port = running.info.listen[1]
    project = _project(tmp_path)
    assert lbrec(project, "pause", SHOP, "--message", "db <upgrade>") == 0
    await _until(running, True)
    paused = await curl(port, "/", host=SHOP)
    assert paused.status == 503 and paused.header("retry-after") == "60"
    assert (
        paused.body == b"<p>db &lt;upgrade&gt;</p>" and paused.header("cache-control") == "no-store"
    )
    assert (await curl(port, "/", host="admin.example.com")).status == 200
    assert lbrec(project, "pause", "--all") == 0
    for _ in range(40):
        if running.info.server.gate.state.all is not None:
            break
        await asyncio.sleep(0.05)
    bare = await curl(port, "/", host="admin.example.com")
    assert bare.status == 503 and bare.header("retry-after") == "30"  # a route without features
    hits = web.hits
    assert lbrec(project, "resume", "--all") == 0
    await _until(running, False)
    assert (await curl(port, "/", host=SHOP)).status == 200
    assert (await curl(port, "/", host="admin.example.com")).status == 200
    assert web.hits == hits + 2
    counters = running.info.server.route_figures.of(f"{SHOP}/")
    assert counters.refused["maintenance"] == 1


async def test_hold_waits_for_resume_and_survives_a_restart(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    web = await backends("web")
    routes = [
        {"host": SHOP, "backends": ["web"]},
        {"host": "admin.example.com", "backends": ["web"]},
    ]
    doc = routed_doc([("web", web.url, 1)], routes)
    project = _project(tmp_path)
    assert lbrec(project, "pause", SHOP, "--hold", "20s") == 0  # before the proxy starts
    running = await proxy(doc)
    port = running.info.listen[1]
    await _until(running, True)
    started = time.monotonic()
    held = asyncio.create_task(curl(port, "/", host=SHOP))
    await asyncio.sleep(0.6)
    assert not held.done() and web.hits == 0
    assert lbrec(project, "resume", SHOP) == 0
    answer = await held
    assert answer.status == 200 and web.hits == 1  # no error: it waited for the resume
    assert time.monotonic() - started < 20


async def test_features_reload_under_keep_alive_drops_no_connection(
    proxy: ProxyFactory, backends: BackendFactory, http: aiohttp.ClientSession
) -> None:
    web = await backends("web")
    route: dict[str, Any] = {"host": SHOP, "backends": ["web"]}
    doc = routed_doc([("web", web.url, 1)], [route])
    running = await proxy(doc)
    server = running.info.server
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection for every request
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=connector) as one:

        async def get() -> int:
            async with one.get(f"{running.url}/", headers={"Host": SHOP}) as response:
                await response.read()
                return response.status

        statuses.append(await get())
        assert server.features is None  # nothing on: the hot path
        connection = set(server.connections)
        route["rate_limit"] = {"requests": 3, "per": "1m"}
        await running.reload(doc, until=lambda s: s.features is not None)
        statuses += [await get() for _ in range(4)]
        doc["timeouts"]["read"] = 4.0  # the route unchanged: its buckets carry over
        await running.reload(doc, until=lambda s: s.pool.config.timeouts.read == 4.0)
        statuses.append(await get())
        route["compress"] = True  # the route changed: it starts afresh
        await running.reload(
            doc,
            until=lambda s: (
                s.pool.config.routes is not None and s.pool.config.routes[0].compress is True
            ),
        )
        statuses.append(await get())
        del route["rate_limit"], route["compress"]
        await running.reload(doc, until=lambda s: s.features is None)
        statuses.append(await get())
        assert set(server.connections) == connection  # the same keep-alive connection
    assert statuses == [200, 200, 200, 200, 429, 429, 200, 200]
