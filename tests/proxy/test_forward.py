"""The data path against real backends on loopback: balancing, failures, headers, streams."""

from __future__ import annotations

import asyncio
import collections
import logging
import re

import aiohttp
import pytest

from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc


async def _names(http: aiohttp.ClientSession, url: str, n: int) -> list[str]:
    names = []
    for _ in range(n):
        async with http.get(url) as response:
            assert response.status == 200, await response.text()
            names.append(response.headers["X-Backend"])
    return names


async def test_distribution_2_3_exact(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    p = await proxy(config_doc([("a", a.url, 2), ("b", b.url, 3)]))
    names = await _names(http, p.url + "/x", 100)
    assert collections.Counter(names) == {"a": 40, "b": 60}
    assert names[:5] == ["b", "a", "b", "a", "b"]
    for start in range(0, 96):  # any window of 5 is exact
        assert collections.Counter(names[start : start + 5]) == {"a": 2, "b": 3}


async def test_concurrent_requests_and_body(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))

    async def one(i: int) -> None:
        async with http.post(p.url + f"/echo?i={i}", data=b"x" * (i * 997)) as response:
            doc = await response.json()
            assert doc["size"] == i * 997 and doc["path"] == f"/echo?i={i}"

    await asyncio.gather(*(one(i) for i in range(40)))


async def test_killed_backend_no_client_errors(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    p = await proxy(config_doc([("a", a.url, 1), ("b", b.url, 1)]))
    await _names(http, p.url + "/warm", 10)  # pooled keep-alive connections to both
    await a.stop()
    names = await _names(http, p.url + "/after", 30)
    assert set(names) == {"b"}
    async with http.get(p.admin_url + "/-/pool") as response:
        pool = {x["name"]: x for x in (await response.json())["backends"]}
    assert pool["a"]["errors"] >= 1
    assert pool["a"]["state"] in ("ejected", "down")


async def test_all_down_gives_503(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    await a.stop()
    async with http.get(p.url + "/x") as response:
        assert response.status == 503
        assert "no healthy backend" in await response.text()
    async with http.head(p.url + "/x") as response:
        assert response.status == 503


async def test_empty_pool_gives_503(proxy: ProxyFactory, http: aiohttp.ClientSession) -> None:
    p = await proxy(config_doc([]))
    async with http.get(p.url + "/x") as response:
        assert response.status == 503
        assert "no backends configured" in await response.text()


async def test_slow_backend_504(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    doc = config_doc([("a", a.url, 1)], timeouts={"connect": 1.0, "read": 0.5, "idle": 30.0})
    p = await proxy(doc)
    async with http.get(p.url + "/slow?s=5") as response:
        assert response.status == 504
    async with http.get(p.url + "/slow?s=0") as response:  # the proxy still serves
        assert response.status == 200


async def test_5xx_passes_through_and_ejects(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    doc = config_doc([("a", a.url, 1), ("b", b.url, 1)], passive={"max_fails": 2, "cooldown": 30})
    p = await proxy(doc)
    statuses = []
    for _ in range(4):
        async with http.get(p.url + "/status/500") as response:
            statuses.append(response.status)
    assert statuses == [500, 500, 500, 500]  # answers are passed through, never rewritten
    async with http.get(p.admin_url + "/-/pool") as response:
        states = {x["name"]: x["state"] for x in (await response.json())["backends"]}
    assert sorted(states.values()) == ["ejected", "up"]  # never the last one in rotation
    async with http.get(p.url + "/x") as response:
        assert response.status == 200
        assert response.headers["X-Backend"] == next(n for n, s in states.items() if s == "up")


async def test_headers_hop_by_hop_and_forwarded(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    headers = {
        "Connection": "keep-alive, X-Private",
        "X-Private": "secret",
        "Keep-Alive": "timeout=9",
        "TE": "trailers",
        "X-Forwarded-For": "203.0.113.7",
        "X-Kept": "yes",
    }
    async with http.get(p.url + "/h?x=1", headers=headers) as response:
        seen = (await response.json())["headers"]
    assert "X-Private" not in seen and "Keep-Alive" not in seen and "TE" not in seen
    assert seen["X-Kept"] == "yes"
    assert seen["X-Forwarded-For"] == "127.0.0.1"  # an untrusted peer's value is replaced
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == f"127.0.0.1:{p.info.listen[1]}"
    assert seen["Host"] == f"127.0.0.1:{p.info.listen[1]}"  # kept by default
    async with http.get(p.url + "/hop") as response:
        assert response.headers["X-Custom"] == "kept"
        assert "Keep-Alive" not in response.headers
        assert "Proxy-Authenticate" not in response.headers
        assert await response.text() == "hop"


async def test_trusted_proxies_append_forwarding_headers(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    doc = config_doc([("a", a.url, 1)], trusted_proxies=["127.0.0.0/8"], forwarded_header=True)
    p = await proxy(doc)
    headers = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "shop.example",
        "Forwarded": "for=203.0.113.7;proto=https",
    }
    async with http.get(p.url + "/h", headers=headers) as response:
        seen = (await response.json())["headers"]
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "https"
    assert seen["X-Forwarded-Host"] == "shop.example"
    host = f"127.0.0.1:{p.info.listen[1]}"
    assert seen["Forwarded"] == (
        f'for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host="{host}"'
    )
    # The same headers from a peer outside trusted_proxies are replaced, never appended to.
    p.write(dict(doc, trusted_proxies=["10.0.0.0/8"]))
    await asyncio.sleep(0.5)
    async with aiohttp.ClientSession() as fresh, fresh.get(p.url + "/h", headers=headers) as resp:
        seen = (await resp.json())["headers"]  # trust is judged when a connection opens
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == host
    assert seen["Forwarded"] == f'for=127.0.0.1;proto=http;host="{host}"'


async def test_host_rewrite_when_configured(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)], preserve_host=False))
    async with http.get(p.url + "/h") as response:
        seen = (await response.json())["headers"]
    assert seen["Host"] == f"127.0.0.1:{a.port}"


async def test_chunked_both_ways_and_head(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))

    async def gen() -> collections.abc.AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 10_000

    async with http.post(p.url + "/up", data=gen()) as response:  # chunked upload
        assert (await response.json())["size"] == 100_000
    async with http.get(p.url + "/stream?n=7") as response:  # chunked download
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert await response.text() == "".join(f"part{i};" for i in range(7))
    async with http.head(p.url + "/x") as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
    async with http.get(p.url + "/x") as response:  # the connection after HEAD still works
        assert response.status == 200
    async with http.get(p.url + "/status/204") as response:
        assert response.status == 204


async def test_limits(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(
        config_doc([("a", a.url, 1)], limits={"max_header_bytes": 2048, "max_body_bytes": 1000})
    )
    async with http.get(p.url + "/x", headers={"X-Big": "z" * 4000}) as response:
        assert response.status == 431
    async with http.post(p.url + "/x", data=b"z" * 2000) as response:
        assert response.status == 413
    async with http.post(p.url + "/x", data=b"z" * 500) as response:
        assert response.status == 200


async def test_websocket_upgrade(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    async with http.ws_connect(p.url + "/ws") as ws:
        for i in range(3):
            await ws.send_str(f"m{i}")
            assert await asyncio.wait_for(ws.receive_str(), 5) == f"a:m{i}"
    async with http.get(p.url + "/x") as response:
        assert response.status == 200


async def test_pipelined_requests(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    request = b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n"
    writer.write(request % 1 + request % 2 + request % 3)
    await writer.drain()
    bodies = []
    for _ in range(3):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        bodies.append(await reader.readexactly(length))
    assert [b'"/p1"' in x for x in bodies] == [True, False, False]
    assert b'"/p3"' in bodies[2]
    writer.close()
    await writer.wait_closed()


async def test_bad_request_line(proxy: ProxyFactory) -> None:
    p = await proxy(config_doc([]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400 ")
    writer.close()
    await writer.wait_closed()


async def _one_shot_backend() -> tuple[asyncio.Server, int, list[int]]:
    """A raw backend that answers one request per connection, keeps the connection open
    (no ``Connection: close``) and silently closes it when a second request arrives: the
    stale keep-alive race, made deterministic. Path /die closes without answering."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if head.startswith((b"GET /die", b"POST /die")):
                writer.transport.abort()
                return
            if head.startswith(b"POST /form"):
                served.append(1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: raw\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request: drop it, close
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], served


async def test_stale_keepalive_retried_for_post(
    proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    server, port, served = await _one_shot_backend()
    try:
        p = await proxy(config_doc([("raw", f"http://127.0.0.1:{port}", 1)]))
        for i in range(5):
            async with http.post(p.url + "/form", data=b"k=%d" % i) as response:
                assert response.status == 200 and await response.text() == "ok"
        assert len(served) == 5
    finally:
        server.close()
        await server.wait_closed()


async def test_broken_backend_answer(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    server, port, _ = await _one_shot_backend()
    b = await backends("b")
    try:
        raw = f"http://127.0.0.1:{port}"
        p = await proxy(config_doc([("raw", raw, 1)], passive={"max_fails": 0}))
        async with http.post(p.url + "/die", data=b"x") as response:
            assert response.status == 502  # not idempotent: never replayed
        p.write(config_doc([("raw", raw, 1), ("b", b.url, 1)], passive={"max_fails": 0}))
        await asyncio.sleep(0.3)
        for _ in range(4):  # GET: retried on the next backend, the client sees no error
            async with http.get(p.url + "/die") as response:
                assert response.status == 200
    finally:
        server.close()
        await server.wait_closed()


async def test_http10_client(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(b"GET /old HTTP/1.0\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # the proxy closes after the answer
    assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in data
    assert b'"/old"' in data
    writer.close()
    await writer.wait_closed()


async def test_upgrade_refused_closes_cleanly(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(
        b"GET /not-ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    data = await asyncio.wait_for(reader.read(), 5)  # answered, then closed (no hang)
    assert data.startswith(b"HTTP/1.1 200 ")
    writer.close()
    await writer.wait_closed()


async def test_websocket_close_from_client_closes_backend(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    ws = await http.ws_connect(p.url + "/ws")
    await ws.send_str("x")
    assert await asyncio.wait_for(ws.receive_str(), 5) == "a:x"
    await ws.close()
    server = p.info.server
    for _ in range(100):
        if not server.connections and server.pool.backends["a"].conns.opened == 0:
            break
        await asyncio.sleep(0.02)
    assert not server.connections
    assert server.pool.backends["a"].conns.opened == 0


async def test_idle_client_connection_closed(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    doc = config_doc([("a", a.url, 1)], timeouts={"connect": 1.0, "read": 5.0, "idle": 0.3})
    p = await proxy(doc)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the proxy when idle
    writer.close()
    await writer.wait_closed()


async def test_access_log(
    backends: BackendFactory,
    proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    p.info.server.access_log = True
    with caplog.at_level(logging.INFO, logger="lbrec.proxy.access"):
        async with http.get(p.url + "/logged?q=1") as response:
            assert response.status == 200
    records = [r for r in caplog.records if r.name == "lbrec.proxy.access"]
    assert len(records) == 1
    record = records[0]
    assert record.__dict__["event"] == "access"
    assert record.__dict__["path"] == "/logged?q=1"
    assert record.__dict__["status"] == 200 and record.__dict__["backend"] == "a"
    fields = record.__dict__
    assert fields["attempts"] == 1 and fields["user_agent"].startswith("Python/")
    assert fields["bytes"] > 0 and fields["upstream_ms"] is not None
    assert fields["upstream_ms"] <= fields["duration_ms"] + 0.01
    # the id the backend received is the one logged
    assert a.seen_headers[-1]["X-Request-ID"] == fields["request_id"]
    assert "reason" not in fields  # only errors say why


async def test_access_log_of_a_503_says_why_and_request_ids_pass_through(
    backends: BackendFactory,
    proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    p.info.server.access_log = True
    with caplog.at_level(logging.INFO, logger="lbrec.proxy.access"):
        headers = {"X-Request-ID": "client-chosen-42"}
        async with http.get(p.url + "/x", headers=headers) as response:
            assert response.status == 200
        # one that is not printable ASCII is dropped (the usable second one is kept)...
        headers_two = [("X-Request-ID", "two words"), ("X-Request-ID", "x")]
        async with http.get(p.url + "/y", headers=headers_two) as response:
            assert response.status == 200
        # ... and with none usable, the proxy makes one
        async with http.get(p.url + "/w", headers={"X-Request-ID": "bad\tid"}) as response:
            assert response.status == 200
        await p.reload(config_doc([]), until=lambda s: not s.pool.backends)
        async with http.get(p.url + "/z") as response:
            assert response.status == 503
    assert [h["X-Request-ID"] for h in a.seen_headers[-3:]][:2] == ["client-chosen-42", "x"]
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", a.seen_headers[-1]["X-Request-ID"])
    records = [r.__dict__ for r in caplog.records if r.name == "lbrec.proxy.access"]
    assert [r["request_id"] for r in records[:1]] == ["client-chosen-42"]
    last = records[-1]
    assert last["status"] == 503 and last["reason"] == "no backends configured"
    assert last["attempts"] == 0 and last["backend"] is None and last["request_id"]


async def test_oversized_second_request_does_not_leak_into_first(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    p = await proxy(
        config_doc([("a", a.url, 1)], limits={"max_header_bytes": 2048, "max_body_bytes": 10**6})
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    first = b"POST /one HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    second = (
        b"POST /two HTTP/1.1\r\nHost: t\r\nX-Big: " + b"z" * 4000 + b"\r\n"
        b"Content-Length: 5\r\n\r\nEVIL!"
    )
    writer.write(first + second)
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 200 ") or data.startswith(b"HTTP/1.1 431 ")
    assert b'"size": 3' in data or b"431" in data
    assert a.hits <= 1
    writer.close()
    await writer.wait_closed()


async def test_passive_ejection_expires(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    doc = config_doc([("a", a.url, 1), ("b", b.url, 1)], passive={"max_fails": 2, "cooldown": 0.3})
    p = await proxy(doc)
    server = p.info.server
    backend = server.pool.backends["a"]
    server.passive_failure(backend, "test")
    assert backend.state == "up"  # one failure is not enough
    server.passive_failure(backend, "test")
    assert backend.state == "ejected"
    assert list(server.pool.balancer.eligible) == ["b"]
    await asyncio.sleep(0.5)
    assert backend.state == "up"
    assert list(server.pool.balancer.eligible) == ["a", "b"]
