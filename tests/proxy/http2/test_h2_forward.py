"""HTTP/2 requests forwarded to HTTP/1.1 backends: answers, bodies both ways, flow control,
errors, GOAWAY on shutdown (proxy/http2/connection.py), over TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.proxy.conftest import BackendFactory
from tests.support.certs import CertAuthority

from .support import H2Client, h2_proxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


async def test_get_is_forwarded_as_http11(ca: CertAuthority, backends: BackendFactory) -> None:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        answer = await client.get(
            "/hello?x=1", extra=[("x-test", "yes"), ("cookie", "a=1"), ("cookie", "b=2")]
        )
        assert answer.status == 200, answer
        seen = json.loads(answer.body)
        assert seen["path"] == "/hello?x=1"
        assert seen["headers"]["Host"] == "a.example"
        assert seen["headers"]["x-test"] == "yes"
        assert seen["headers"]["Cookie"] == "a=1; b=2"
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
        assert answer.header(b"x-backend") == b"b1"
        assert answer.header(b"connection") is None
        await client.close()


async def test_many_streams_at_once(ca: CertAuthority, backends: BackendFactory) -> None:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        sids = [await client.start(client.request_headers(f"/n{i}")) for i in range(50)]
        answers = [await client.response(sid) for sid in sids]
        assert [a.status for a in answers] == [200] * 50
        assert [json.loads(a.body)["path"] for a in answers] == [f"/n{i}" for i in range(50)]
        await client.close()


async def test_post_bodies_with_and_without_length(
    ca: CertAuthority, backends: BackendFactory
) -> None:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        body = b"x" * 300_000  # several windows: the proxy must hand them back
        sid = await client.start(
            client.request_headers("/up", "POST", extra=[("content-length", str(len(body)))]),
            end=False,
        )
        await _send_body(client, sid, body)
        answer = await client.response(sid)
        assert answer.status == 200
        assert json.loads(answer.body)["size"] == len(body)
        assert json.loads(answer.body)["headers"]["Content-Length"] == str(len(body))
        sid = await client.start(client.request_headers("/up", "POST"), end=False)
        await _send_body(client, sid, b"y" * 1000)
        answer = await client.response(sid)
        seen = json.loads(answer.body)
        assert seen["size"] == 1000
        assert seen["headers"]["Transfer-Encoding"] == "chunked"
        await client.close()


async def _send_body(client: H2Client, sid: int, body: bytes) -> None:
    view = memoryview(body)
    while view:
        window = client.conn.local_flow_control_window(sid)
        if window <= 0:
            await client.read()
            continue
        size = min(window, client.conn.max_outbound_frame_size, len(view))
        client.conn.send_data(sid, bytes(view[:size]), end_stream=size == len(view))
        view = view[size:]
        await client.send()


async def test_big_answer_within_the_windows(ca: CertAuthority, backends: BackendFactory) -> None:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        answer = await client.get("/big?mib=3")
        assert answer.status == 200
        assert len(answer.body) == 3 << 20
        streamed = await client.get("/stream?n=4")
        assert streamed.body == b"part0;part1;part2;part3;"
        await client.close()


async def test_head_and_errors(ca: CertAuthority, backends: BackendFactory) -> None:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        head = await client.get("/x", method="HEAD")
        assert head.status == 200 and head.body == b"" and head.reset is None
        status = await client.get("/status/503")
        assert status.status == 503
        await backend.stop()
        down = await client.get("/x")
        assert down.status in (502, 503)  # the only backend: refused, then none healthy
        await client.close()


async def test_shutdown_sends_goaway_and_finishes_the_stream_in_flight(
    ca: CertAuthority, backends: BackendFactory
) -> None:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        sid = await client.start(client.request_headers("/slow?s=0.5"))
        await asyncio.sleep(0.1)
        shutdown = asyncio.create_task(proxy.server.shutdown(drain_timeout=3, idle_grace=0.1))
        for _ in range(20):
            if client.goaway is not None:
                break
            await client.read(0.1)
        assert client.goaway is not None and client.goaway.last_stream_id == sid
        late = await client.start(client.request_headers("/after-goaway"))
        refused = await client.response(late)
        assert refused.reset == 7  # REFUSED_STREAM: the client may retry it elsewhere
        answer = await client.response(sid)
        assert answer.status == 200 and answer.body == b"late"
        await client.until_closed(3)
        assert client.closed
        await shutdown


async def test_the_listener_context_offers_h2_and_app_protocol_serves_both(
    ca: CertAuthority, backends: BackendFactory
) -> None:
    """proxy/tls.py's listener context (SNI, the Mozilla profile) negotiates h2 with a client
    that offers it and http/1.1 with one that does not; app_protocol makes the connection of
    each, and both are answered by the backend."""
    from lbrec.proxy.http2.connection import app_protocol
    from lbrec.proxy.server import ProxyServer, listening_socket
    from lbrec.proxy.tls import CertStore, listener_context
    from lbrec.proxy.tls_transport import TlsConnection
    from tests.support.certs import as_strings

    from .support import NAME, client_context, proxy_config

    backend = await backends("b1")
    server = ProxyServer(proxy_config(backend.url))
    await server.start(listening_socket("127.0.0.1", 0))
    store = CertStore.load([as_strings(ca.leaf("site", [NAME]))])
    context = listener_context(lambda: store)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: TlsConnection(lambda _hello: context, lambda alpn: app_protocol(server, alpn)),
        "127.0.0.1",
        0,
    )
    port = listener.sockets[0].getsockname()[1]
    try:
        client = await H2Client.connect(ca, port)
        answer = await client.get("/over-h2")
        assert answer.status == 200 and json.loads(answer.body)["path"] == "/over-h2"
        await client.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(ca, ("http/1.1",)), server_hostname=NAME
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.write(f"GET /over-h1 HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5)
        assert data.startswith(b"HTTP/1.1 200") and b"/over-h1" in data
        writer.close()
    finally:
        listener.close()
        await server.shutdown(drain_timeout=1.0, idle_grace=0.1)


async def test_a_slow_backend_back_pressures_the_upload(
    ca: CertAuthority, backends: BackendFactory
) -> None:
    """The request body's window is handed back only as the backend takes the bytes: while it
    reads nothing (2 s), the client can send its window and what the sockets hold, not 16 MiB;
    then the whole body arrives."""
    backend = await backends("b1")
    size = 16 << 20
    async with h2_proxy(ca, backend.url) as proxy:
        client = await H2Client.connect(ca, proxy.tls_port)
        sid = await client.start(
            client.request_headers("/lazy?s=2", "POST", extra=[("content-length", str(size))]),
            end=False,
        )
        sent = 0
        chunk = b"z" * 16384
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        while loop.time() < deadline:
            window = client.conn.local_flow_control_window(sid)
            if window < len(chunk):
                await client.read(0.1)
                continue
            client.conn.send_data(sid, chunk)
            sent += len(chunk)
            await client.send()
        stream = proxy.made[-1].streams[sid]
        assert stream.exchange is not None and stream.exchange.upstream is not None
        transport = stream.exchange.upstream.transport
        assert transport is not None
        held = transport.get_write_buffer_size()
        print(f"sent while the backend read nothing: {sent} bytes, {held} held by the proxy")
        assert sent < 8 << 20  # the window, and what the kernel's socket buffers took
        assert held <= 256 * 1024  # the rest waits in the client: its window is closed
        while sent < size:
            window = client.conn.local_flow_control_window(sid)
            if window <= 0:
                await client.read(1.0)
                continue
            step = min(window, len(chunk), size - sent)
            client.conn.send_data(sid, chunk[:step], end_stream=sent + step == size)
            sent += step
            await client.send()
        answer = await client.response(sid, timeout=30)
        assert answer.status == 200
        assert json.loads(answer.body)["size"] == size
        await client.close()


async def test_a_released_stream_hands_its_held_window_back(
    ca: CertAuthority, backends: BackendFactory
) -> None:
    """Body bytes held unacknowledged (the exchange paused the client) when the stream goes
    (reset by the client): the connection's window is handed back for them, else 1 MiB of
    such streams would stall the connection. Driven in memory, frame by frame."""
    import h2.config
    import h2.connection

    from lbrec.proxy.http2.connection import CONNECTION_WINDOW, Http2Connection
    from lbrec.proxy.server import ProxyServer

    from .support import proxy_config

    backend = await backends("b1")
    server = ProxyServer(proxy_config(backend.url))
    written: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            written.append(data)

        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

        def close(self) -> None:
            pass

    conn = Http2Connection(server)
    conn.connection_made(Transport())  # type: ignore[arg-type]
    client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"https"),
                            (b":authority", b"a.example"), (b":path", b"/up")])  # fmt: skip
    conn.data_received(client.data_to_send())
    stream = conn.streams[1]
    stream.pause_reading_for_body(True)  # as the exchange does while no backend takes it
    for _ in range(5):
        client.send_data(1, b"h" * 10_000)
    conn.data_received(client.data_to_send())
    assert stream.unacked == 50_000
    manager = conn.h2._inbound_flow_control_window_manager
    processed = manager._bytes_processed
    client.reset_stream(1, 8)
    conn.data_received(client.data_to_send())
    assert 1 not in conn.streams
    # every byte received is either in the window again or counted to be handed back
    assert manager.current_window_size + manager._bytes_processed == CONNECTION_WINDOW
    assert processed == 0
    conn.connection_lost(None)
