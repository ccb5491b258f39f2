"""Issue 23 end to end, admission: a real proxy on 127.0.0.1, real backends, curl as the client.
Basic auth against a file made by Debian's htpasswd, the allow-list (and trusted_proxies),
forward-auth against a real aiohttp service, rate limits, the concurrency cap, max_body."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.server import ProxyServer

from .conftest import BackendFactory, ProxyFactory
from .features_support import curl, htpasswd, routed_doc

ADMIN = "admin.example.com"


def _port(running: Any) -> int:
    return int(running.info.listen[1])


async def test_basic_auth_with_a_real_htpasswd_file(
    proxy: ProxyFactory,
    backends: BackendFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    web_backend = await backends("web")
    htpasswd(tmp_path / "admin.htpasswd", "alice", "s3cret")
    route = {
        "host": ADMIN,
        "backends": ["web"],
        "auth": {"basic": {"users_file": "admin.htpasswd", "realm": "Admins"}},
    }
    running = await proxy(routed_doc([("web", web_backend.url, 1)], [route]))
    port = _port(running)
    caplog.set_level(logging.INFO)
    refused = await curl(port, "/", host=ADMIN)
    assert refused.status == 401
    assert refused.header("www-authenticate") == 'Basic realm="Admins", charset="UTF-8"'
    wrong = await curl(port, "/", "-u", "alice:nope", host=ADMIN)
    assert wrong.status == 401
    for _ in range(2):  # the second from the cache of verified credentials
        ok = await curl(port, "/x", "-u", "alice:s3cret", host=ADMIN)
        assert ok.status == 200 and ok.header("x-backend") == "web"
    assert web_backend.hits == 2  # nothing of a refused request reached the backend
    # the backend gets the Authorization the client sent (it is the app's, too)
    assert web_backend.seen_headers[-1]["Authorization"].startswith("Basic ")
    # a POST with a body: held while the hash is checked, then sent whole
    (tmp_path / "body").write_bytes(b"x" * 200_000)
    posted = await curl(
        port, "/p", "-u", "alice:s3cret", "--data-binary", f"@{tmp_path / 'body'}", host=ADMIN
    )
    assert posted.status == 200 and b'"size": 200000' in posted.body
    assert "s3cret" not in caplog.text and "YWxpY2U6czNjcmV0" not in caplog.text


async def test_allow_list_uses_the_trusted_address_only(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    web_backend = await backends("web")
    routes = [{"host": ADMIN, "backends": ["web"], "auth": {"allow": ["10.0.0.0/8"]}}]
    running = await proxy(routed_doc([("web", web_backend.url, 1)], routes))
    port = _port(running)
    spoofed = await curl(port, "/", "-H", "X-Forwarded-For: 10.1.2.3", host=ADMIN)
    assert spoofed.status == 403 and web_backend.hits == 0  # 127.0.0.1 is not trusted
    # 127.0.0.1 a trusted proxy: the first untrusted hop from the right is the client
    doc = routed_doc([("web", web_backend.url, 1)], routes, trusted_proxies=["127.0.0.0/8"])
    running2 = await proxy(doc)
    port2 = _port(running2)
    ok = await curl(port2, "/", "-H", "X-Forwarded-For: 10.1.2.3", host=ADMIN)
    assert ok.status == 200
    spoof_left = await curl(port2, "/", "-H", "X-Forwarded-For: 10.1.2.3, 192.0.2.7", host=ADMIN)
    assert spoof_left.status == 403


@pytest.fixture
async def auth_service() -> AsyncIterator[dict[str, Any]]:
    """A real forward-auth service: X-Token good -> 204 with X-User; slow -> sleeps; else 401."""
    seen: list[dict[str, str]] = []

    async def check(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        token = request.headers.get("X-Token")
        if token == "good":
            return web.Response(status=204, headers={"X-User": "alice", "X-Other": "no"})
        if token == "slow":
            await asyncio.sleep(3)
            return web.Response(status=204)
        return web.Response(
            status=401, text="who are you?", headers={"WWW-Authenticate": 'Bearer realm="x"'}
        )

    app = web.Application()
    app.router.add_get("/check", check)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield {"url": f"http://127.0.0.1:{port}/check", "seen": seen}
    await runner.cleanup()


async def test_forward_auth_passes_relays_and_fails_closed(
    proxy: ProxyFactory, backends: BackendFactory, auth_service: dict[str, Any]
) -> None:
    web_backend = await backends("web")
    forward = {"url": auth_service["url"], "copy_headers": ["X-User"], "timeout": 1}
    dead = {"url": "http://127.0.0.1:9/check", "timeout": 1}  # discard port: refused
    routes = [
        {"host": ADMIN, "backends": ["web"], "auth": {"forward": forward}},
        {"host": "dead.example.com", "backends": ["web"], "auth": {"forward": dead}},
    ]
    running = await proxy(routed_doc([("web", web_backend.url, 1)], routes))
    port = _port(running)
    ok = await curl(port, "/in?q=1", "-H", "X-Token: good", "-H", "X-User: mallory", host=ADMIN)
    assert ok.status == 200
    seen = web_backend.seen_headers[-1]
    assert seen["X-User"] == "alice" and "X-Other" not in seen  # only the listed header
    asked = auth_service["seen"][-1]
    assert asked["X-Forwarded-Uri"] == "/in?q=1" and asked["X-Forwarded-Host"] == f"{ADMIN}:{port}"
    denied = await curl(port, "/", host=ADMIN)
    assert denied.status == 401 and denied.body == b"who are you?"
    assert denied.header("www-authenticate") == 'Bearer realm="x"'
    slow = await curl(port, "/", "-H", "X-Token: slow", host=ADMIN)
    assert slow.status == 503  # its own timeout: fails closed
    down = await curl(port, "/", host="dead.example.com")
    assert down.status == 503
    assert web_backend.hits == 1


async def test_rate_limit_answers_429_with_retry_after(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    web_backend = await backends("web")
    doc = routed_doc(
        [("web", web_backend.url, 1)],
        [{"host": "shop.example.com", "backends": ["web"]}],
        defaults={"rate_limit": {"requests": 3, "per": "1m"}},
    )
    running = await proxy(doc)
    port = _port(running)
    statuses = [(await curl(port, "/", host="shop.example.com")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await curl(port, "/", host="shop.example.com")
    assert limited.status == 429
    assert (
        limited.header("retry-after") is not None and int(limited.header("retry-after") or 0) >= 1
    )
    assert web_backend.hits == 3
    counters = running.info.server.route_figures.of("shop.example.com/")
    assert counters.refused["ratelimit"] == 1 and counters.status[4] == 1
    assert running.info.admin is not None
    scrape = (await curl(running.info.admin[1], "/metrics")).body.decode()
    route = 'route="shop.example.com/"'
    for line in (
        f'lbrec_proxy_route_refusals_total{{reason="ratelimit",{route},worker="0"}} 1.0',
        f'lbrec_proxy_route_responses_total{{code="2xx",{route},worker="0"}} 3.0',
        f'lbrec_proxy_route_responses_total{{code="4xx",{route},worker="0"}} 1.0',
    ):
        assert line in scrape.splitlines()


async def test_the_plain_pool_takes_the_top_level_defaults(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    web_backend = await backends("web")
    doc = routed_doc(
        [("web", web_backend.url, 1)], [], defaults={"rate_limit": {"requests": 1, "per": "1m"}}
    )
    del doc["routes"]
    running = await proxy(doc)
    port = _port(running)
    assert (await curl(port, "/")).status == 200
    assert (await curl(port, "/")).status == 429


async def test_concurrency_cap_and_its_slot_released_on_every_ending(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    web_backend = await backends("web")
    limit = {"requests": 1000, "per": 1, "concurrency": 1}
    doc = routed_doc(
        [("web", web_backend.url, 1)],
        [{"host": "shop.example.com", "backends": ["web"], "rate_limit": limit}],
    )
    running = await proxy(doc)
    port = _port(running)
    features = running.info.server.feature_set
    assert features is not None
    cap = features.by_key["shop.example.com/"].concurrency
    assert cap is not None

    async def held(count: int) -> None:
        for _ in range(200):
            if len(cap) == count:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"{len(cap)} clients hold a slot, not {count}")

    slow = asyncio.create_task(curl(port, "/slow?s=1", host="shop.example.com"))
    await held(1)
    capped = await curl(port, "/", host="shop.example.com")
    assert capped.status == 429 and capped.header("retry-after") == "1"
    assert (await slow).status == 200
    assert (await curl(port, "/", host="shop.example.com")).status == 200  # released
    # a client that goes away mid-answer releases its slot too
    gone = await curl(port, "/slow?s=2", "--max-time", "0.5", host="shop.example.com")
    assert gone.status == 0  # curl gave up: the client went away
    await held(0)
    assert (await curl(port, "/", host="shop.example.com")).status == 200


async def test_max_body_413_early_and_when_chunked_goes_over(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    web_backend = await backends("web")
    doc = routed_doc(
        [("web", web_backend.url, 1)],
        [{"host": "shop.example.com", "backends": ["web"], "max_body": "1k"}],
    )
    running = await proxy(doc)
    port = _port(running)
    small = await curl(port, "/", "--data-binary", "x" * 1000, host="shop.example.com")
    assert small.status == 200
    early = await curl(port, "/", "--data-binary", "x" * 2000, host="shop.example.com")
    assert early.status == 413 and early.header("connection") == "close"
    chunked = await curl(
        port,
        "/lazy?s=0.5",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "y" * 5000,
        host="shop.example.com",
    )
    assert chunked.status == 413
    assert web_backend.hits == 1


async def test_each_worker_takes_its_share_of_a_rate_limit() -> None:
    """``lbrec proxy --workers N`` (proxy/cli.py -> ServeOptions.workers -> ProxyServer): each
    worker's buckets hold 1/N of the rate and of the burst (docs/routes.md)."""
    doc = routed_doc(
        [("web", "http://127.0.0.1:9", 1)],
        [{"host": "shop.example.com", "backends": ["web"]}],
        defaults={"rate_limit": {"requests": 100, "per": "1s", "burst": 40}},
    )
    config = BackendsConfig.model_validate(doc)
    for workers, rate, burst in ((1, 100.0, 40.0), (4, 25.0, 10.0)):
        server = ProxyServer(config, workers=workers)
        assert server.feature_set is not None
        limiter = server.feature_set.by_key["shop.example.com/"].rate
        assert limiter is not None and (limiter.rate, limiter.burst) == (rate, burst)


async def test_forward_auth_is_told_the_path_the_client_asked_for_not_the_stripped_one(
    proxy: ProxyFactory, backends: BackendFactory, auth_service: dict[str, Any]
) -> None:
    """A route with ``strip_prefix``: the backend gets the stripped path, the auth service
    (whose rules and login redirects are about what the client asked) the path as sent."""
    web_backend = await backends("web")
    forward = {"url": auth_service["url"], "copy_headers": ["X-User"], "timeout": 1}
    routes = [
        {
            "host": ADMIN,
            "path": "/app/",
            "strip_prefix": True,
            "backends": ["web"],
            "auth": {"forward": forward},
        },
    ]
    running = await proxy(routed_doc([("web", web_backend.url, 1)], routes))
    ok = await curl(_port(running), "/app/in?q=1", "-H", "X-Token: good", host=ADMIN)
    assert ok.status == 200
    assert auth_service["seen"][-1]["X-Forwarded-Uri"] == "/app/in?q=1"
    assert json.loads(ok.body)["path"] == "/in?q=1"  # what the backend was asked
