"""Issue 23 end to end, answers: compression (curl --compressed: gzip, br, zstd) over HTTP/1.1
and HTTP/2 on the TLS listener, affinity by cookie kept and moved, the route's error pages."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.certs import CertAuthority

from .conftest import BackendFactory, ProxyFactory
from .features_support import curl, routed_doc

SHOP = "shop.example.com"
PAGE = ("<p>lbrec compresses text answers of a route that asks for it.</p>\n" * 2000).encode()


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """An app with answers of every kind compression must tell apart."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", headers={"ETag": '"v1"'})

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(20):
            await response.write(PAGE[:5000])
        await response.write_eof()
        return response

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG" + b"\0" * 5000, content_type="image/png")

    async def no_transform(request: web.Request) -> web.Response:
        return web.Response(
            body=PAGE, content_type="text/html", headers={"Cache-Control": "no-transform"}
        )

    async def encoded(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(PAGE),
            headers={"Content-Type": "text/html", "Content-Encoding": "gzip"},
        )

    async def ranged(request: web.Request) -> web.Response:
        headers = {"Content-Range": f"bytes 0-1999/{len(PAGE)}"}
        return web.Response(status=206, body=PAGE[:2000], content_type="text/html", headers=headers)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/page", page)
    app.router.add_get("/ranged", ranged)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/image", image)
    app.router.add_get("/no-transform", no_transform)
    app.router.add_get("/encoded", encoded)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def _tls_doc(site: str, ca: CertAuthority) -> dict[str, Any]:
    cert, key = ca.leaf("shop", [SHOP])
    doc = routed_doc([("site", site, 1)], [{"host": SHOP, "backends": ["site"], "compress": True}])
    doc["tls"] = {"listen": "127.0.0.1:0", "certificates": [{"cert": str(cert), "key": str(key)}]}
    return doc


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_compression_over_http1_and_http2(
    proxy: ProxyFactory, site: str, tmp_path: Path, coding: str
) -> None:
    ca = CertAuthority(tmp_path / "pki")
    running = await proxy(_tls_doc(site, ca))
    assert running.info.tls is not None
    tls = running.info.tls[1]
    cacert = ("--cacert", str(ca.pem))
    for path in ("/page", "/streamed"):
        for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
            asked = ("-H", f"Accept-Encoding: {coding}", "--compressed")
            answer = await curl(tls, path, flag, *cacert, *asked, host=SHOP, https=True)
            assert (answer.status, answer.version) == (200, version), answer
            assert answer.header("content-encoding") == coding
            assert answer.header("vary") == "Accept-Encoding"
            assert answer.header("content-length") is None
            expected = PAGE if path == "/page" else PAGE[:5000] * 20
            assert answer.body == expected  # curl decoded it
    # HTTP/1.1 chunked, the ETag made weak; a client that asks nothing gets the Vary
    h1 = ("--http1.1", *cacert)
    plain = await curl(tls, "/page", *h1, "--compressed", host=SHOP, https=True)
    assert plain.header("transfer-encoding") == "chunked" and plain.header("etag") == 'W/"v1"'
    identity = await curl(tls, "/page", *h1, host=SHOP, https=True)
    assert identity.header("content-encoding") is None and identity.body == PAGE
    assert identity.header("vary") == "Accept-Encoding"
    counters = running.info.server.route_figures.of(f"{SHOP}/")
    assert counters.compressed == 5 and counters.bytes_out * 5 < counters.bytes_in


async def test_what_is_never_compressed(proxy: ProxyFactory, site: str) -> None:
    doc = routed_doc([("site", site, 1)], [{"host": SHOP, "backends": ["site"], "compress": True}])
    running = await proxy(doc)
    port = running.info.listen[1]
    for path in ("/image", "/no-transform"):
        answer = await curl(port, path, "--compressed", host=SHOP)
        assert answer.status == 200 and answer.header("content-encoding") is None, path
    double = await curl(port, "/encoded", "-H", "Accept-Encoding: gzip, br", host=SHOP)
    assert double.header("content-encoding") == "gzip"  # the backend's own, untouched
    assert gzip.decompress(double.body) == PAGE
    ranged = await curl(port, "/ranged", "--compressed", "-r", "0-1999", host=SHOP)
    assert ranged.status == 206 and ranged.header("content-encoding") is None
    head = await curl(port, "/page", "-I", "-H", "Accept-Encoding: gzip", host=SHOP)
    assert head.status == 200 and head.header("content-encoding") is None


async def test_affinity_cookie_kept_then_moved(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    one, two = await backends("one"), await backends("two")
    route = {"host": SHOP, "backends": ["one", "two"], "sticky": "cookie:lb-web"}
    running = await proxy(routed_doc([("one", one.url, 1), ("two", two.url, 1)], [route]))
    port = running.info.listen[1]
    jar = str(tmp_path / "jar")
    first = await curl(port, "/", "-c", jar, host=SHOP)
    pinned = first.header("x-backend")
    cookies = [c for c in first.headers["set-cookie"] if c.startswith("lb-web=")]
    assert len(cookies) == 1
    assert cookies[0].endswith("; Path=/; HttpOnly; SameSite=Lax")
    value = cookies[0].split(";")[0].split("=", 1)[1]
    assert len(value) == 22 and "127.0.0.1" not in value
    for _ in range(6):  # the rotation alternates; the pin does not
        again = await curl(port, "/", "-b", jar, "-c", jar, host=SHOP)
        assert again.header("x-backend") == pinned
        assert not any(c.startswith("lb-web=") for c in again.headers.get("set-cookie", []))
    gone = one if pinned == "one" else two
    await gone.stop()
    moved = await curl(port, "/", "-b", jar, "-c", jar, host=SHOP)
    assert moved.status == 200 and moved.header("x-backend") != pinned
    assert any(c.startswith("lb-web=") for c in moved.headers["set-cookie"])
    kept = await curl(port, "/", "-b", jar, host=SHOP)
    assert kept.header("x-backend") == moved.header("x-backend")
    counters = running.info.server.route_figures.of(f"{SHOP}/")
    assert counters.affinity["new"] == 1 and counters.affinity["moved"] == 1
    assert counters.affinity["kept"] >= 7


async def test_lbrec_own_errors_use_the_route_pages(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    up = await backends("up")
    (tmp_path / "503.html").write_text("<h1>we are down</h1>")
    (tmp_path / "504.html").write_text("<h1>too slow</h1>")
    pages = {"503": "503.html", "504": "504.html"}
    routes = [
        {"host": SHOP, "backends": ["up"], "error_pages": pages},
        {"host": "dead.example.com", "backends": ["dead"], "error_pages": pages},
    ]
    doc = routed_doc([("up", up.url, 1), ("dead", "http://127.0.0.1:9", 1)], routes)
    doc["timeouts"]["read"] = 0.5
    running = await proxy(doc)
    port = running.info.listen[1]
    slow = await curl(port, "/slow?s=3", host=SHOP)
    assert slow.status == 504 and slow.body == b"<h1>too slow</h1>"
    assert slow.header("content-type") == "text/html; charset=utf-8"
    dead = await curl(port, "/", host="dead.example.com")
    assert dead.status == 503 and dead.body == b"<h1>we are down</h1>"
    # the backend's own 503 is never replaced
    own = await curl(port, "/status/503", host=SHOP)
    assert own.status == 503 and own.body == b"status"
    await asyncio.sleep(0)
