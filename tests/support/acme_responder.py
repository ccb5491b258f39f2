"""A stand-in for the proxy's side of ACME in tests: it serves a deploy folder's
``.lbrec/acme/`` (backends.json ``tls.acme_dir``) as the proxy does, on 127.0.0.1.

* plain HTTP on ``http_port``: ``GET /.well-known/acme-challenge/<token>`` answers the file
  ``http-01/<token>``, anything else 404;
* TLS on ``tls_port``, through proxy/tls_transport.py (:class:`TlsConnection` reads the
  ClientHello first): a hello whose ALPN is exactly ``acme-tls/1`` gets the certificate
  ``tls-alpn-01/<name>.pem`` for its server name (and nothing else does); any other gets the
  certificate of ``serving()`` for its name (the obtained ones), and ``200 ok``.

A port given as None is not listened on (port 80 "closed", for TLS-ALPN-01's case).

It runs its own event loop in a thread; ``close()`` stops it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

from lbrec.proxy.tls import CertStore
from lbrec.proxy.tls_transport import ClientHello, TlsConnection

__all__ = ["AcmeResponder"]

_PATH = re.compile(rb"^GET /\.well-known/acme-challenge/([A-Za-z0-9_-]+) HTTP/1\.[01]\r\n")


class _Plain(asyncio.Protocol):
    def __init__(self, acme_dir: Path, hits: list[str]) -> None:
        self._acme_dir = acme_dir
        self._buffer = b""
        self._hits = hits
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport (a test before this one in
        # the same process may have installed uvloop's event loop policy)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer or self._transport is None:
            return
        match = _PATH.match(self._buffer)
        body, status = b"not found\n", b"404 Not Found"
        if match is not None:
            token = match.group(1).decode()
            path = self._acme_dir / "http-01" / token
            if path.is_file():
                body, status = path.read_bytes(), b"200 OK"
                self._hits.append(f"http-01 {token}")
        self._transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (status, len(body), body)
        )
        self._transport.close()


class _Ok(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self._transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
            )
            self._transport.close()


class AcmeResponder:
    def __init__(
        self,
        acme_dir: Path,
        *,
        http_port: int | None,
        tls_port: int | None,
        serving: Callable[[], CertStore] | None = None,
    ) -> None:
        self.acme_dir = acme_dir
        self.http_port = http_port
        self.tls_port = tls_port
        self.hits: list[str] = []
        self._serving = serving or (lambda: CertStore(()))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._run, name="acme-responder", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the ACME responder did not start")

    def _context(self, hello: ClientHello | None) -> ssl.SSLContext:
        if hello is not None and hello.alpn == ("acme-tls/1",) and hello.server_name:
            name = hello.server_name
            pem = self.acme_dir / "tls-alpn-01" / f"{name}.pem"
            key = self.acme_dir / "tls-alpn-01" / f"{name}.key"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_alpn_protocols(["acme-tls/1"])
            if pem.is_file() and key.is_file():
                context.load_cert_chain(str(pem), str(key))
                self.hits.append(f"tls-alpn-01 {name}")
            return context
        cert = self._serving().for_name(hello.server_name if hello else None)
        if cert is not None:
            return cert.context
        return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: the handshake fails

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            if self.http_port is not None:
                plain = await self._loop.create_server(
                    lambda: _Plain(self.acme_dir, self.hits), "127.0.0.1", self.http_port
                )
                self._servers.append(plain)
            if self.tls_port is not None:
                tls = await self._loop.create_server(
                    lambda: TlsConnection(self._context, lambda _alpn: _Ok(), handshake_timeout=5),
                    "127.0.0.1",
                    self.tls_port,
                )
                self._servers.append(tls)

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        for server in self._servers:
            server.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
