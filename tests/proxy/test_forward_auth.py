"""proxy/forward_auth.py against real HTTP services on 127.0.0.1 (aiohttp servers)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from lbrec.proxy.config import ForwardAuthSettings
from lbrec.proxy.forward_auth import ForwardAuthClient, apply_copied

REQUEST: dict[str, Any] = {
    "method": b"POST",
    "uri": b"/admin/users?page=2",
    "host": b"admin.example.com",
    "proto": "https",
    "client_ip": "203.0.113.7",
    "headers": [
        (b"Host", b"admin.example.com"),
        (b"Cookie", b"session=abc"),
        (b"Content-Length", b"12"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive"),
        (b"X-Forwarded-For", b"6.6.6.6"),  # spoofed: replaced by the trusted address
        (b"X-User", b"admin"),  # spoofed: removed by apply_copied
    ],
}


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def check(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        cookie = request.headers.get("Cookie", "")
        if "session=abc" in cookie:
            return web.Response(
                status=200,
                headers={"X-User": "alice", "X-Role": "admin", "Set-Cookie": "t=1"},
                text="ok",
            )
        if "session=redirect" in cookie:
            raise web.HTTPFound("/login?next=/admin")
        if "session=slow" in cookie:
            await asyncio.sleep(2)
        if "session=huge" in cookie:
            return web.Response(status=403, body=b"x" * (65 * 1024))
        return web.Response(
            status=401, headers={"WWW-Authenticate": 'Bearer realm="x"'}, text="log in"
        )

    async def login(request: web.Request) -> web.Response:
        return web.Response(text="the login page: never fetched by the proxy")

    app = web.Application()
    app.router.add_get("/check", check)
    app.router.add_get("/login", login)
    runner, base = await start(app)
    yield base, seen
    await runner.cleanup()


def client(
    url: str, timeout: float = 2.0, copy: tuple[str, ...] = ("X-User",)
) -> ForwardAuthClient:
    return ForwardAuthClient(ForwardAuthSettings(url=url, copy_headers=copy, timeout=timeout))


async def test_a_2xx_lets_through_and_copies_only_the_listed_headers(
    service: tuple[str, list[web.Request]],
) -> None:
    base, seen = service
    auth = client(f"{base}/check")
    verdict = await auth.check(**REQUEST)
    await auth.close()
    assert verdict.allowed and verdict.status == 200 and verdict.error is None
    assert verdict.copy == [(b"X-User", b"alice")]  # not X-Role, not Set-Cookie
    sent = seen[0]
    assert sent.method == "GET"
    assert sent.headers["X-Forwarded-Method"] == "POST"
    assert sent.headers["X-Forwarded-Proto"] == "https"
    assert sent.headers["X-Forwarded-Host"] == "admin.example.com"
    assert sent.headers["X-Forwarded-Uri"] == "/admin/users?page=2"
    assert sent.headers.getall("X-Forwarded-For") == ["203.0.113.7"]
    assert sent.headers["Cookie"] == "session=abc"
    for name in ("Content-Length", "Transfer-Encoding"):
        assert name not in sent.headers or sent.headers[name] == "0"
    assert sent.host.startswith("127.0.0.1")  # its own host, not the site's
    # the request for the backend: the client's X-User gone, the service's in
    forwarded = apply_copied(REQUEST["headers"], ["X-User"], verdict.copy)
    assert [v for n, v in forwarded if n.lower() == b"x-user"] == [b"alice"]


async def test_a_denial_is_answered_as_the_service_gave_it(
    service: tuple[str, list[web.Request]],
) -> None:
    base, _ = service
    auth = client(f"{base}/check")
    verdict = await auth.check(**{**REQUEST, "headers": [(b"Cookie", b"session=none")]})
    assert not verdict.allowed and verdict.status == 401 and verdict.error is None
    assert (b"WWW-Authenticate", b'Bearer realm="x"') in verdict.headers
    assert verdict.body == b"log in"
    assert not any(n.lower() == b"content-length" for n, _ in verdict.headers)
    await auth.close()


async def test_redirects_are_never_followed(service: tuple[str, list[web.Request]]) -> None:
    base, seen = service
    auth = client(f"{base}/check")
    verdict = await auth.check(**{**REQUEST, "headers": [(b"Cookie", b"session=redirect")]})
    await auth.close()
    assert (verdict.allowed, verdict.status) == (False, 302)
    assert (b"Location", b"/login?next=/admin") in verdict.headers
    assert len(seen) == 1  # the login page was not fetched


async def test_a_timeout_fails_closed(service: tuple[str, list[web.Request]]) -> None:
    base, _ = service
    auth = client(f"{base}/check", timeout=0.3)
    started = asyncio.get_running_loop().time()
    verdict = await auth.check(**{**REQUEST, "headers": [(b"Cookie", b"session=slow")]})
    await auth.close()
    assert asyncio.get_running_loop().time() - started < 2
    assert (verdict.allowed, verdict.status, verdict.error) == (False, 503, "timeout")


async def test_a_huge_denial_fails_closed(service: tuple[str, list[web.Request]]) -> None:
    base, _ = service
    auth = client(f"{base}/check")
    verdict = await auth.check(**{**REQUEST, "headers": [(b"Cookie", b"session=huge")]})
    await auth.close()
    assert (verdict.allowed, verdict.status) == (False, 503)


async def test_a_service_that_is_down_fails_closed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    auth = client(f"http://127.0.0.1:{port}/check")
    verdict = await auth.check(**REQUEST)
    await auth.close()
    assert not verdict.allowed and verdict.status == 503
    assert verdict.error is not None and verdict.body.startswith(b"authentication service")


async def test_a_service_that_resets_fails_closed() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    auth = client(f"http://127.0.0.1:{port}/check")
    verdict = await auth.check(**REQUEST)
    await auth.close()
    server.close()
    await server.wait_closed()
    assert (verdict.allowed, verdict.status) == (False, 503)
