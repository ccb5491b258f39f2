"""Edges of one client connection found by review: pipelining around upgrades and errors,
slow readers, and what a finished exchange leaves in the upstream pool.

Real proxy, real HTTP servers and raw sockets on loopback; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import aiohttp
from aiohttp import web

from lbrec.proxy.body import REPLAY_LIMIT
from tests.proxy.conftest import BackendFactory, ProxyFactory, RunningProxy, config_doc

_NO_FALL = {"interval": 60.0, "timeout": 0.5, "rise": 1, "fall": 100}
_GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
_WS = (
    b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


async def _read_until(reader: asyncio.StreamReader, marker: bytes, within: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + within
    while marker not in seen and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(reader.read(65536), 0.2)
            if not data:
                break
            seen += data
    return seen


async def _small_window_connection(
    p: RunningProxy,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client whose socket buffers, and the proxy's towards it, are tiny: what the proxy
    writes backs up in its transport at once (pause_writing) instead of in the kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", p.info.listen[1]))
    local = sock.getsockname()
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    for _ in range(50):
        for conn in p.info.server.connections:
            assert conn.transport is not None
            if conn.transport.get_extra_info("peername")[:2] == local[:2]:
                server_side = conn.transport.get_extra_info("socket")
                server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                return reader, writer
        await asyncio.sleep(0.01)
    raise AssertionError("the proxy never accepted the connection")


async def _one_write_backend(size: int) -> web.AppRunner:
    """A backend that answers every request with ``size`` bytes in one write."""
    body = b"b" * size

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_websocket_handshake_pipelined_behind_a_request_is_served(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(_GET + _WS)  # one segment: the handshake is parsed before the GET started
    seen = await _read_until(reader, b"HTTP/1.1 101 ", within=10)
    writer.close()
    assert seen.startswith(b"HTTP/1.1 200 "), seen[:200]
    assert b"HTTP/1.1 101 " in seen, seen[:400]


async def test_bytes_before_the_101_are_bounded(proxy: ProxyFactory) -> None:
    """A backend that never answers the handshake: the client is not read without bound."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = await proxy(config_doc([("mute", f"http://127.0.0.1:{port}", 1)], health=_NO_FALL))
    _reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(_WS)
    block = b"x" * (1 << 20)
    with contextlib.suppress(TimeoutError):
        for _ in range(64):  # up to 64 MiB offered; the proxy must stop reading long before
            writer.write(block)
            await asyncio.wait_for(writer.drain(), 2.0)
    held = [
        sum(map(len, c.tunnel.pending or []))
        for c in p.info.server.connections
        if c.tunnel is not None
    ]
    writer.close()
    for w in accepted:
        w.close()
    server.close()
    assert held, "the handshake never reached the proxy's tunnel state"
    # One read beyond the limit at most (a read is at most 256 KiB).
    assert held[0] <= REPLAY_LIMIT + (256 << 10), held


async def test_an_upstream_paused_for_a_slow_reader_is_not_pooled_paused(
    proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    runner = await _one_write_backend(90 << 10)
    try:
        p = await proxy(config_doc([("a", f"http://127.0.0.1:{runner.addresses[0][1]}", 1)]))
        reader, writer = await _small_window_connection(p)
        writer.write(_GET)  # the answer ends in the read that pauses the backend
        await asyncio.sleep(0.5)
        body = await asyncio.wait_for(reader.readuntil(b"b" * 1024), 10)
        assert body.startswith(b"HTTP/1.1 200 ")
        writer.close()
        idle = list(p.info.server.pool.backends["a"].conns.idle)
        assert idle, "the backend connection was not kept"
        assert all(c.transport is not None and c.transport.is_reading() for c in idle)
        # The pooled connection answers the next client (a paused one: 504 after 5 s).
        async with http.get(p.url + "/after", timeout=aiohttp.ClientTimeout(total=3)) as r:
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_a_client_that_stops_reading_with_a_request_queued_is_closed(
    proxy: ProxyFactory,
) -> None:
    runner = await _one_write_backend(60 << 10)
    try:
        doc = config_doc([("a", f"http://127.0.0.1:{runner.addresses[0][1]}", 1)])
        doc["timeouts"]["idle"] = 1.0
        p = await proxy(doc)
        reader, writer = await _small_window_connection(p)
        writer.write(_GET * 4)  # and never a read
        for _ in range(75):  # 15 s at most
            if not p.info.server.connections:
                break
            await asyncio.sleep(0.2)
        assert not p.info.server.connections, "a client that never reads is held forever"
        writer.close()
        del reader
    finally:
        await runner.cleanup()


async def test_a_bad_request_after_a_good_one_does_not_answer_for_it(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(_GET + b"GET /second HTTP/1.1\r\n\r\n")  # no Host: 400, but after the first
    answer = await asyncio.wait_for(reader.read(), 10)  # the proxy closes after the first
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert a.hits == 1


async def test_the_header_timeout_of_a_pipelined_head_starts_after_the_answer(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    doc = config_doc([("a", a.url, 1)])
    doc["timeouts"]["header"] = 2.0
    p = await proxy(doc)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.info.listen[1])
    writer.write(b"GET /slow?s=3 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    await asyncio.sleep(0.3)
    writer.write(b"GET /next HTTP/1.1\r\n")  # the next head begins while the answer is slow
    first = await _read_until(reader, b"late", within=10)
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"late"), first
    await asyncio.sleep(0.8)  # well within 2 s of the answer, long after the head began
    writer.write(b"Host: example.com\r\n\r\n")
    second = await _read_until(reader, b"\r\n\r\n", within=10)
    writer.close()
    assert second.startswith(b"HTTP/1.1 200 "), second[:200]
