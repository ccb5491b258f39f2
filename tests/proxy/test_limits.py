"""Slow and greedy clients: header timeout, connection limit, bounded pipelining, idle crowds.

Each test bounds its loops in count and time and keeps checking that other clients are still
served while one client misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from lbrec.proxy.downstream import MAX_PIPELINE
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc

_GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


async def _served(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/ok") as response:
        return response.status == 200


async def test_slowloris_is_closed_after_the_header_timeout(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    doc = config_doc([("a", a.url, 1)])
    doc["timeouts"]["header"] = 1.0
    p = await proxy(doc)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    head = b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: " + b"a" * 100
    answer = b""
    try:
        for byte in head:  # one byte every 0.2 s: at most 28 s, closed long before
            writer.write(bytes([byte]))
            await writer.drain()
            assert await _served(http, p.url)  # everyone else is served meanwhile
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(4096), 0.2)
            if reader.at_eof():
                break
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert reader.at_eof()


async def test_connection_limit_answers_503_and_recovers(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    doc = config_doc([("a", a.url, 1)])
    doc["limits"] = {"max_connections": 5}
    p = await proxy(doc)
    port = p.info.listen[1]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ") and b"too many connections" in refused
    assert p.info.server.refused_connections == 1
    _, held_writer = held.pop()
    held_writer.close()
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_GET)
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line.startswith(b"HTTP/1.1 200 "), line
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_pipelining_is_bounded_for_a_client_that_never_reads(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(_GET * 5000)  # ~190 KB of requests, and never a read
    await writer.drain()
    await asyncio.sleep(1.0)
    assert all(len(c.queue) <= MAX_PIPELINE for c in p.info.server.connections)
    # One in flight plus MAX_PIPELINE queued; the rest is never parsed (the client retries it
    # on a new connection, RFC 9112 9.3.2), so memory per connection stays bounded.
    assert a.hits <= MAX_PIPELINE + 1, a.hits
    assert await _served(http, p.url)
    writer.close()
    del reader


async def test_many_idle_connections_do_not_stop_service(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    port = p.info.listen[1]
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(500)]
    for _ in range(20):
        assert await _served(http, p.url)
    assert len(p.info.server.connections) >= 500
    for _, writer in idle:
        writer.close()
