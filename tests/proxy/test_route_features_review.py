"""Issue 23 under review: route features against an attacker and a demanding operator. A real
proxy on 127.0.0.1, real backends (or a real listener whose accept queue is full, so that a
backend connect hangs), curl as the client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.certs import CertAuthority

from .conftest import BackendFactory, ProxyFactory
from .features_support import curl, htpasswd, routed_doc
from .http2.support import H2Client

SHOP = "shop.example.com"
LAN = ["10.0.0.0/8"]


def _port(running: Any) -> int:
    return int(running.info.listen[1])


@contextmanager
def hanging_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect to it hangs (SYNs dropped)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_concurrency_slot_released_when_the_client_goes_during_the_backend_connect(
    proxy: ProxyFactory,
) -> None:
    """A client that gives up while the proxy still connects to a backend (admitted, not yet
    attempting) must give its concurrency slot back; else a few such clients lock the key out
    (every later request 429) until the proxy restarts."""
    limit = {"requests": 1000, "per": 1, "concurrency": 1}
    with hanging_listener() as backend_port:
        doc = routed_doc(
            [("web", f"http://127.0.0.1:{backend_port}", 1)],
            [{"host": SHOP, "backends": ["web"], "rate_limit": limit}],
            health={"interval": 600, "timeout": 0.5, "rise": 1, "fall": 10},
            timeouts={"connect": 8.0, "read": 5.0, "idle": 30.0},
        )
        running = await proxy(doc)
        features = running.info.server.feature_set
        assert features is not None
        cap = features.by_key[f"{SHOP}/"].concurrency
        assert cap is not None
        gone = await curl(_port(running), "/", "--max-time", "0.5", host=SHOP)
        assert gone.status == 0  # curl gave up while the proxy connected
        for _ in range(100):
            if len(cap) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(cap) == 0, "the slot of a client gone during the connect is still held"


async def test_no_doubled_slash_goes_around_a_routes_admission(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    """``/admin`` is allow-listed, ``/`` is open, both on the same backend. ``//admin/x`` (and
    friends) must take the ``/admin`` route: most servers (nginx's merge_slashes, Go's
    path.Clean, Traefik's and Caddy's own matchers) read it as ``/admin/x``."""
    web_backend = await backends("web")
    doc = routed_doc(
        [("web", web_backend.url, 1)],
        [
            {"host": SHOP, "path": "/admin", "backends": ["web"], "auth": {"allow": LAN}},
            {"host": SHOP, "backends": ["web"]},
        ],
    )
    running = await proxy(doc)
    port = _port(running)
    assert (await curl(port, "/admin/x", host=SHOP)).status == 403
    assert (await curl(port, "/", host=SHOP)).status == 200
    for path in ("//admin/x", "///admin", "/x//..//admin", "/.//admin/"):
        answer = await curl(port, path, "--path-as-is", host=SHOP)
        assert answer.status == 403, (path, answer.status)


@asynccontextmanager
async def service(handler: Any, path: str = "/check") -> AsyncIterator[str]:
    """A real aiohttp service on 127.0.0.1 whose every GET ``path`` is ``handler``: its URL."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


async def test_forward_auth_denial_body_sent_whole_when_it_comes_in_pieces(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    """The auth service's own answer (a login page) goes to the client whole, however the
    service writes it (was: only its first read, under a Content-Length of that read)."""
    page = b"".join(b"%05d login page line\n" % n for n in range(2000))  # ~42 KiB

    async def check(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(status=401, headers={"Content-Type": "text/html"})
        answer.content_length = len(page)
        await answer.prepare(request)
        for start in range(0, len(page), 4096):
            await answer.write(page[start : start + 4096])
            await asyncio.sleep(0.005)
        return answer

    web_backend = await backends("web")
    async with service(check) as url:
        forward = {"url": url, "timeout": 5}
        routes = [{"host": SHOP, "backends": ["web"], "auth": {"forward": forward}}]
        running = await proxy(routed_doc([("web", web_backend.url, 1)], routes))
        denied = await curl(_port(running), "/", host=SHOP)
    assert denied.status == 401
    assert denied.body == page
    assert web_backend.hits == 0


async def test_rate_limit_keys_an_ipv6_client_by_its_64(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    """One IPv6 subscriber holds a whole /64 (RFC 6177): keyed per /128, it takes a fresh bucket
    per request (2**64 addresses) and its flood evicts everyone else's buckets. Clients come
    through a trusted proxy here (X-Forwarded-For), as behind a CDN."""
    web_backend = await backends("web")
    limit = {"requests": 1, "per": 600, "burst": 1}
    routes = [{"host": SHOP, "backends": ["web"], "rate_limit": limit}]
    doc = routed_doc([("web", web_backend.url, 1)], routes, trusted_proxies=["127.0.0.0/8"])
    port = _port(await proxy(doc))

    async def status(address: str) -> int:
        answer = await curl(port, "/", "-H", f"X-Forwarded-For: {address}", host=SHOP)
        return answer.status

    assert await status("2001:db8:1:2::1") == 200
    assert await status("2001:db8:1:2::2") == 429  # the same /64
    assert await status("2001:db8:1:2:ffff:1:2:3") == 429
    assert await status("2001:db8:1:3::1") == 200  # another /64
    assert await status("192.0.2.1") == 200
    assert await status("192.0.2.2") == 200  # IPv4: per address
    assert await status("::ffff:192.0.2.1") == 429  # IPv4-mapped: the IPv4 client


def _tls_doc(ca: CertAuthority, backend_url: str, route: dict[str, Any], **extra: Any) -> Any:
    cert, key = ca.leaf("shop", [SHOP])
    doc = routed_doc([("web", backend_url, 1)], [{"host": SHOP, "backends": ["web"], **route}])
    doc["tls"] = {"listen": "127.0.0.1:0", "certificates": [{"cert": str(cert), "key": str(key)}]}
    doc.update(extra)
    return doc


async def test_http2_rst_stream_during_the_backend_connect_releases_the_slot(
    proxy: ProxyFactory, tmp_path: Path
) -> None:
    """The same as over HTTP/1.1, with RST_STREAM: the connection stays, the stream goes."""
    ca = CertAuthority(tmp_path / "pki")
    limit = {"requests": 1000, "per": 1, "concurrency": 1}
    with hanging_listener() as backend_port:
        doc = _tls_doc(
            ca,
            f"http://127.0.0.1:{backend_port}",
            {"rate_limit": limit},
            health={"interval": 600, "timeout": 0.5, "rise": 1, "fall": 10},
            timeouts={"connect": 8.0, "read": 5.0, "idle": 30.0},
        )
        running = await proxy(doc)
        assert running.info.tls is not None
        features = running.info.server.feature_set
        assert features is not None
        cap = features.by_key[f"{SHOP}/"].concurrency
        assert cap is not None
        client = await H2Client.connect(ca, running.info.tls[1], name=SHOP)
        try:
            sid = await client.start(client.request_headers("/", "GET", SHOP))
            for _ in range(100):
                if len(cap) == 1:
                    break
                await asyncio.sleep(0.02)
            assert len(cap) == 1  # admitted: the proxy connects to the backend
            client.conn.reset_stream(sid)
            await client.send()
            for _ in range(100):
                if len(cap) == 0:
                    break
                await asyncio.sleep(0.02)
            assert len(cap) == 0, "the slot of a reset stream is still held"
        finally:
            await client.close()


async def test_client_copies_of_forward_auth_headers_never_reach_the_backend(
    proxy: ProxyFactory, tmp_path: Path
) -> None:
    """X-User as the client sends it (twice, in other cases, as HTTP/2's lower case, or as
    X_User, which CGI-style backends read as X-User) never reaches the backend: only the auth
    service's, over HTTP/1.1 and HTTP/2."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def check(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"X-User": "alice"})

    async def backend(request: web.Request) -> web.Response:
        if request.path == "/app":
            seen.append(list(request.raw_headers))
        return web.Response(text="ok")

    ca = CertAuthority(tmp_path / "pki")
    async with service(check) as url, service(backend, "/{tail:.*}") as backend_url:
        route = {"auth": {"forward": {"url": url, "copy_headers": ["X-User"], "timeout": 5}}}
        running = await proxy(_tls_doc(ca, backend_url.replace("/{tail:.*}", ""), route))
        assert running.info.tls is not None
        spoofs = ("X-User: root", "x-user: root2", "X-USER: root3", "X_User: root4")
        sent = [arg for spoof in spoofs for arg in ("-H", spoof)]
        port = running.info.tls[1]
        for version in ("--http1.1", "--http2"):
            answer = await curl(
                port, "/app", version, "--cacert", str(ca.pem), *sent, host=SHOP, https=True
            )
            assert answer.status == 200, answer
    assert len(seen) == 2
    for headers in seen:
        users = [v for n, v in headers if n.lower().replace(b"_", b"-") == b"x-user"]
        assert users == [b"alice"], headers


async def test_expect_100_continue_gets_no_100_before_admission(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    """A refused request that asked ``Expect: 100-continue`` gets its 401 and never a 100
    (which would invite its body), and the backend never hears of it; the connection closes
    (the announced body was never read)."""
    web_backend = await backends("web")
    htpasswd(tmp_path / "users", "alice", "pw")
    routes = [{"host": SHOP, "backends": ["web"], "auth": {"basic": {"users_file": "users"}}}]
    running = await proxy(routed_doc([("web", web_backend.url, 1)], routes))
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(running))
    try:
        writer.write(
            b"POST /p HTTP/1.1\r\nHost: " + SHOP.encode() + b"\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nAuthorization: Basic YWxpY2U6d3Jvbmc=\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the proxy closes
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert b" 100 " not in answer
    assert web_backend.hits == 0


async def test_password_guesses_count_against_the_routes_rate_limit(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    """A route with basic auth and a rate limit: wrong passwords cost the address tokens, and
    past them a guess gets a 429 without a hash (was: unlimited guesses, each a bcrypt, the
    rate limit counting only requests that passed auth)."""
    web_backend = await backends("web")
    htpasswd(tmp_path / "users", "alice", "pw")
    route = {
        "host": SHOP,
        "backends": ["web"],
        "auth": {"basic": {"users_file": "users"}},
        "rate_limit": {"requests": 2, "per": 600, "burst": 2},
    }
    running = await proxy(routed_doc([("web", web_backend.url, 1)], [route]))
    port = _port(running)
    features = running.info.server.feature_set
    assert features is not None
    verifier = features.by_key[f"{SHOP}/"].basic
    assert verifier is not None
    guesses = [(await curl(port, "/", "-u", f"alice:guess{n}", host=SHOP)).status for n in range(5)]
    assert guesses == [401, 401, 429, 429, 429]
    assert verifier.checks == 2  # no hash past the limit
    assert (await curl(port, "/", "-u", "alice:pw", host=SHOP)).status == 429  # this address
    assert web_backend.hits == 0


async def test_an_open_websocket_holds_its_concurrency_slot_until_it_closes(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    """``concurrency`` caps what a client holds open at once: a WebSocket holds a backend
    connection for its whole life (as Traefik's InFlightReq counts it), so it keeps its slot
    until it closes (was: released at the 101, so one client opened any number)."""
    web_backend = await backends("web")
    limit = {"requests": 1000, "per": 1, "concurrency": 1}
    routes = [{"host": SHOP, "backends": ["web"], "rate_limit": limit}]
    running = await proxy(routed_doc([("web", web_backend.url, 1)], routes))
    port = _port(running)
    features = running.info.server.feature_set
    assert features is not None
    cap = features.by_key[f"{SHOP}/"].concurrency
    assert cap is not None
    url = f"http://127.0.0.1:{port}/ws"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        first = await session.ws_connect(url, headers={"Host": SHOP})
        await first.send_str("hi")
        assert (await first.receive_str()) == "web:hi"
        assert len(cap) == 1
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, headers={"Host": SHOP})
        assert refused.value.status == 429
        await first.close()
        for _ in range(100):
            if len(cap) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(cap) == 0, "the slot of a closed WebSocket is still held"
        second = await session.ws_connect(url, headers={"Host": SHOP})
        await second.send_str("again")
        assert (await second.receive_str()) == "web:again"
        await second.close()


async def test_forward_auth_never_copies_framing_or_forwarding_fields(
    proxy: ProxyFactory,
) -> None:
    """copy_headers naming X-Forwarded-For, Content-Length or Connection copies nothing of
    them: those are the proxy's own to write (was: a second X-Forwarded-For beside the proxy's,
    which most backends read first: a client address the proxy never saw)."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def check(request: web.Request) -> web.Response:
        extra = {"X-User": "alice", "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
        return web.Response(status=204, headers=extra)

    async def backend(request: web.Request) -> web.Response:
        if request.path == "/app":
            seen.append(list(request.raw_headers))
        return web.Response(text="ok")

    async with service(check) as url, service(backend, "/{tail:.*}") as backend_url:
        copy = ["X-User", "X-Forwarded-For", "X-Real-IP", "Content-Length", "Connection"]
        route = {"auth": {"forward": {"url": url, "copy_headers": copy, "timeout": 5}}}
        routes = [{"host": SHOP, "backends": ["web"], **route}]
        base = backend_url.replace("/{tail:.*}", "")
        running = await proxy(routed_doc([("web", base, 1)], routes))
        assert (await curl(_port(running), "/app", host=SHOP)).status == 200
    (headers,) = seen
    named = [(n.lower(), v) for n, v in headers]
    assert (b"x-user", b"alice") in named
    assert [v for n, v in named if n == b"x-forwarded-for"] == [b"127.0.0.1"]
    assert b"6.6.6.6" not in b"".join(v for _n, v in named)


async def test_a_forwarded_for_hop_with_a_port_is_its_address(
    proxy: ProxyFactory, backends: BackendFactory
) -> None:
    """Some front proxies (Azure's gateways) write X-Forwarded-For hops with the client's port
    (``192.0.2.1:51234``, ``[2001:db8::1]:443``). The client is the address: keyed with its
    port, each new connection took a fresh rate-limit bucket (and the allow-list refused it)."""
    web_backend = await backends("web")
    limit = {"requests": 1, "per": 600, "burst": 1}
    routes = [
        {"host": SHOP, "backends": ["web"], "rate_limit": limit},
        {"host": "admin.example.com", "backends": ["web"], "auth": {"allow": ["192.0.2.0/24"]}},
    ]
    doc = routed_doc([("web", web_backend.url, 1)], routes, trusted_proxies=["127.0.0.0/8"])
    port = _port(await proxy(doc))

    async def status(hop: str, host: str = SHOP) -> int:
        return (await curl(port, "/", "-H", f"X-Forwarded-For: {hop}", host=host)).status

    assert await status("192.0.2.1:1111") == 200
    assert await status("192.0.2.1:2222") == 429
    assert await status("192.0.2.1") == 429
    assert await status("[2001:db8::1]:1111") == 200
    assert await status("[2001:db8::1]:2222") == 429
    assert await status("192.0.2.9:1111", "admin.example.com") == 200
    assert await status("198.51.100.9:1111", "admin.example.com") == 403
