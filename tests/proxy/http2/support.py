"""HTTP/2 on 127.0.0.1: a real ProxyServer behind a TLS listener (TlsConnection, ALPN h2 ->
Http2Connection, http/1.1 -> ClientConnection), and an ``h2`` client over a real socket that
can also write raw frames (the attacks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame, GoAwayFrame

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.downstream import ClientConnection
from lbrec.proxy.http2.connection import Http2Connection
from lbrec.proxy.server import ProxyServer, listening_socket
from lbrec.proxy.tls_transport import ClientHello, TlsConnection
from tests.support.certs import CertAuthority

NAME = "a.example"


def server_context(ca: CertAuthority) -> ssl.SSLContext:
    cert, key = ca.leaf("site", [NAME, "b.example"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def client_context(ca: CertAuthority, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.pem))
    context.set_alpn_protocols(list(alpn))
    return context


def proxy_config(backend_url: str, **extra: Any) -> BackendsConfig:
    doc: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "health": {"interval": 30, "timeout": 1, "rise": 1, "fall": 2},
        "timeouts": {"connect": 1.0, "read": 5.0, "idle": 30.0},
        "backends": [{"name": "b1", "url": backend_url, "weight": 1}],
    }
    doc.update(extra)
    return BackendsConfig.model_validate(doc)


@dataclass
class H2Proxy:
    server: ProxyServer
    tls_port: int
    listener: asyncio.AbstractServer
    made: list[Http2Connection] = field(default_factory=list)

    async def close(self) -> None:
        self.listener.close()
        await self.server.shutdown(drain_timeout=1.0, idle_grace=0.1)


@contextlib.asynccontextmanager
async def h2_proxy(ca: CertAuthority, backend_url: str, **extra: Any) -> AsyncIterator[H2Proxy]:
    loop = asyncio.get_running_loop()
    server = ProxyServer(proxy_config(backend_url, **extra))
    await server.start(listening_socket("127.0.0.1", 0))  # the sweeper (and a plain listener)
    context = server_context(ca)
    made: list[Http2Connection] = []

    def app(alpn: str | None) -> asyncio.Protocol:
        if alpn == "h2":
            conn = Http2Connection(server)
            made.append(conn)
            return conn
        return ClientConnection(server)

    def choose(_hello: ClientHello | None) -> ssl.SSLContext:
        return context

    listener = await loop.create_server(
        lambda: TlsConnection(choose, app, handshake_timeout=5.0), "127.0.0.1", 0
    )
    proxy = H2Proxy(server, listener.sockets[0].getsockname()[1], listener, made)
    try:
        yield proxy
    finally:
        await proxy.close()


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reset: int | None = None  # RST_STREAM's error code

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    """An HTTP/2 client over TLS on 127.0.0.1, event by event."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.events: list[h2.events.Event] = []
        self.goaway: GoAwayFrame | None = None
        self._buffer = b""
        self.closed = False
        self.bytes_in = 0
        self.frames_out = 0

    @classmethod
    async def connect(
        cls,
        ca: CertAuthority,
        port: int,
        *,
        name: str = NAME,
        settings: dict[int, int] | None = None,
    ) -> H2Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(ca), server_hostname=name
            ),
            5,
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        client = cls(reader, writer)
        client.conn.initiate_connection()
        if settings:
            client.conn.update_settings(settings)
        await client.send()
        return client

    async def send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)
        await self.writer.drain()

    async def raw(self, data: bytes) -> None:
        """Bytes written as they are, beside the h2 state machine."""
        self.writer.write(data)
        await self.writer.drain()

    async def frames(self, *frames: Frame) -> None:
        self.frames_out += len(frames)
        await self.raw(b"".join(f.serialize() for f in frames))

    async def read(self, timeout: float = 5.0) -> list[h2.events.Event]:  # noqa: ASYNC109
        """One read's events (empty when the server closed)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return []
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return []
        self.bytes_in += len(data)
        try:
            events = self.conn.receive_data(self._without_goaway(data))
        except h2.exceptions.ProtocolError:
            events = []
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                with contextlib.suppress(Exception):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
        self.events += events
        with contextlib.suppress(Exception):
            await self.send()
        return events

    def _without_goaway(self, data: bytes) -> bytes:
        """The whole frames of what was read, GOAWAY taken out (``self.goaway``): h2 as a
        client would take nothing after it, and the server still answers streams in flight."""
        buffer = self._buffer + data
        kept = []
        at = 0
        while len(buffer) - at >= 9:
            length = int.from_bytes(buffer[at : at + 3], "big")
            if len(buffer) - at < 9 + length:
                break
            frame = buffer[at : at + 9 + length]
            if frame[3] == 7:
                parsed, _ = Frame.parse_frame_header(memoryview(frame[:9]))
                parsed.parse_body(memoryview(frame[9:]))
                assert isinstance(parsed, GoAwayFrame)
                self.goaway = parsed
            else:
                kept.append(frame)
            at += 9 + length
        self._buffer = buffer[at:]
        return b"".join(kept)

    async def until_closed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            await self.read(max(0.01, deadline - time.monotonic()))

    def request_headers(
        self,
        path: str = "/",
        method: str = "GET",
        authority: str = NAME,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        headers += [(n.encode(), v.encode()) for n, v in extra or []]
        return headers

    async def start(
        self, headers: list[tuple[bytes, bytes]], body: bytes | None = None, *, end: bool = True
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        await self.send()
        return sid

    async def response(self, sid: int, timeout: float = 10.0) -> Response:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = b""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if getattr(event, "stream_id", None) != sid:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    headers = list(event.headers or [])
                    status = int(dict(headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                elif isinstance(event, h2.events.StreamEnded):
                    return Response(status, headers, body)
                elif isinstance(event, h2.events.StreamReset):
                    return Response(status, headers, body, reset=int(event.error_code or 0))
            seen = len(self.events)
            if self.closed or time.monotonic() > deadline:
                return Response(status, headers, body, reset=-1)
            await self.read(max(0.01, deadline - time.monotonic()))

    async def get(self, path: str = "/", **kw: Any) -> Response:
        sid = await self.start(self.request_headers(path, **kw))
        return await self.response(sid)

    async def close(self) -> None:
        self.writer.transport.abort()  # no TLS shutdown to wait for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_ = Path


@dataclass
class Outcome:
    """What the server did with one raw stream: its answer, a reset, or a GOAWAY."""

    status: int | None = None  # an answer's :status
    reset: int | None = None  # RST_STREAM's error code
    goaway: int | None = None  # GOAWAY's error code (the connection ends)
    closed: bool = False  # the connection closed

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.status}"
        if self.reset is not None:
            return f"RST_STREAM({_CODES.get(self.reset, self.reset)})"
        if self.goaway is not None:
            return f"GOAWAY({_CODES.get(self.goaway, self.goaway)})"
        return "closed" if self.closed else "nothing"


_CODES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    6: "FRAME_SIZE_ERROR",
    9: "COMPRESSION_ERROR",
    11: "ENHANCE_YOUR_CALM",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    2: "INTERNAL_ERROR",
}


class RawClient:
    """HTTP/2 written frame by frame (hyperframe, hpack), read frame by frame: no client-side
    validation, so anything a hostile client can send, this sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import hpack

        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self._buffer = b""
        self.closed = False
        self.bytes_in = 0
        self.received: list[tuple[int, int, int, bytes]] = []  # type, flags, stream, payload

    @classmethod
    async def connect(cls, ca: CertAuthority, port: int, *, name: str = NAME) -> RawClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(ca), server_hostname=name
            ),
            5,
        )
        client = cls(reader, writer)
        await client.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
        await client.read_frames(1)  # the server's SETTINGS, acknowledged: nothing more to send
        return client

    async def write(self, data: bytes) -> bool:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError, RuntimeError):
            self.closed = True
            return False
        return True

    def block(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return bytes(self.encoder.encode(headers, huffman=False))

    async def headers(
        self, sid: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool = True
    ) -> None:
        await self.write(frame(1, 0x4 | (0x1 if end_stream else 0), sid, self.block(headers)))

    async def read_frames(self, timeout: float = 3.0) -> bool:  # noqa: ASYNC109
        """Read once; False when the connection closed."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return True
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.bytes_in += len(data)
        buffer = self._buffer + data
        at = 0
        while len(buffer) - at >= 9:
            length = int.from_bytes(buffer[at : at + 3], "big")
            if len(buffer) - at < 9 + length:
                break
            kind, flags = buffer[at + 3], buffer[at + 4]
            sid = int.from_bytes(buffer[at + 5 : at + 9], "big") & 0x7FFFFFFF
            self.received.append((kind, flags, sid, buffer[at + 9 : at + 9 + length]))
            if kind == 4 and not flags & 1:  # the server's SETTINGS: acknowledge
                self.writer.write(frame(4, 1, 0, b""))
            at += 9 + length
        self._buffer = buffer[at:]
        return True

    def outcome(self, sid: int) -> Outcome | None:
        for kind, _flags, stream, payload in self.received:
            if kind == 1 and stream == sid:
                fields = dict(self.decoder.decode(payload, raw=True))
                return Outcome(status=int(fields[b":status"]))
            if kind == 3 and stream == sid:
                return Outcome(reset=int.from_bytes(payload[:4], "big"))
            if kind == 7:
                return Outcome(goaway=int.from_bytes(payload[4:8], "big"))
        return Outcome(closed=True) if self.closed else None

    def goaway(self) -> int | None:
        for kind, _flags, _stream, payload in self.received:
            if kind == 7:
                return int.from_bytes(payload[4:8], "big")
        return None

    async def wait_outcome(self, sid: int, timeout: float = 5.0) -> Outcome:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            found = self.outcome(sid)
            if found is not None or time.monotonic() > deadline:
                return found or Outcome()
            await self.read_frames(max(0.01, deadline - time.monotonic()))

    async def drain_until_closed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            await self.read_frames(max(0.01, deadline - time.monotonic()))

    async def close(self) -> None:
        self.writer.transport.abort()  # no TLS shutdown to wait for


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    """One HTTP/2 frame, as bytes (RFC 9113 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def _spki_pin(pem: Path) -> str:
    """Chromium's pin of a certificate's key (--ignore-certificate-errors-spki-list)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.asynccontextmanager
async def pinned_chromium(site_pem: Path, profile: Path, what: str) -> AsyncIterator[Any]:
    """Headless Chromium (a persistent context) that maps ``NAME`` to 127.0.0.1 and trusts the
    certificate ``site_pem`` by its key (no warning bypassed). Without Chromium: the test
    fails under CI (``what`` says which), else it is skipped."""
    import os

    import pytest

    from tests.proxy.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _browser_missing

    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_BROWSER"):
            pytest.fail(f"{what} needs Chromium: {missing}")
        pytest.skip(f"needs Chromium: {missing}")
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                *CHROMIUM_ARGS,
                f"--host-resolver-rules=MAP {NAME} 127.0.0.1",
                f"--ignore-certificate-errors-spki-list={_spki_pin(site_pem)}",
            ],
        )
        try:
            yield context
        finally:
            await context.close()
