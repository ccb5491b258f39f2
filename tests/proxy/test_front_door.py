"""Issue 22 end to end on a real proxy and real backends on 127.0.0.1: routes by host and
path (plain HTTP here; tests/proxy/test_front_door_tls.py has the TLS listener), health shared
by every route of an instance, a route change as a reload."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp

from .conftest import BackendFactory, ProxyFactory, config_doc


async def _get(http: aiohttp.ClientSession, url: str, host: str) -> tuple[int, str, Any]:
    async with http.get(url, headers={"Host": host}, allow_redirects=False) as response:
        body: Any = await response.json() if response.status == 200 else await response.text()
        return response.status, response.headers.get("X-Backend", ""), body


async def test_hosts_and_paths_go_to_their_backends(
    proxy: ProxyFactory, backends: BackendFactory, http: aiohttp.ClientSession
) -> None:
    web, api, other = await backends("web"), await backends("api"), await backends("other")
    doc = config_doc([("web", web.url, 1), ("api", api.url, 1), ("other", other.url, 1)])
    doc["routes"] = [
        {"host": "shop.example.com", "backends": ["web"]},
        {"host": "shop.example.com", "path": "/api/", "backends": ["api"], "strip_prefix": True},
        {"host": "*.example.org", "backends": ["other", "web"]},
    ]
    running = await proxy(doc)
    url = running.url
    status, backend, body = await _get(http, f"{url}/cart?x=1", "shop.example.com")
    assert (status, backend, body["path"]) == (200, "web", "/cart?x=1")
    status, backend, body = await _get(http, f"{url}/api/orders?id=7", "Shop.Example.com:80")
    assert (status, backend, body["path"]) == (200, "api", "/orders?id=7")
    assert body["headers"]["X-Forwarded-Proto"] == "http"
    status, backend, _ = await _get(http, f"{url}/%61pi/x", "shop.example.com")
    assert (status, backend) == (200, "api")  # no spelling goes around a route
    seen = Counter([(await _get(http, f"{url}/", "a.example.org"))[1] for _ in range(20)])
    assert seen == {"other": 10, "web": 10}
    status, _, text = await _get(http, f"{url}/", "unknown.example.net")
    assert (status, text) == (404, "no route for this host and path\n")


async def test_a_route_change_is_a_reload_and_health_is_per_instance(
    proxy: ProxyFactory, backends: BackendFactory, http: aiohttp.ClientSession
) -> None:
    web, api = await backends("web"), await backends("api")
    doc = config_doc([("web", web.url, 1), ("api", api.url, 1)])
    doc["routes"] = [
        {"host": "a.example", "backends": ["web", "api"]},
        {"host": "b.example", "backends": ["api"]},
    ]
    running = await proxy(doc)
    server = running.info.server
    # api fails its health checks: neither route sends it anything
    api.healthy = False
    for _ in range(100):
        if all(b.health.value == "down" for b in server.pool.backends.values() if b.name == "api"):
            break
        await asyncio.sleep(0.05)
    hits = Counter([(await _get(http, f"{running.url}/", "a.example"))[1] for _ in range(6)])
    assert hits == {"web": 6}
    status, _, _ = await _get(http, f"{running.url}/", "b.example")
    assert status == 503
    api.healthy = True
    # a route change: b.example now goes to web too, without a restart
    doc["routes"][1] = {"host": "b.example", "backends": ["web"]}
    generation = server.pool.digest
    await running.reload(doc, until=lambda s: s.pool.digest != generation)
    status, backend, _ = await _get(http, f"{running.url}/", "b.example")
    assert (status, backend) == (200, "web")
