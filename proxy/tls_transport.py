"""The TLS listener's connections: TLS over memory BIOs, between the socket and the HTTP
protocol, in the manner of asyncio's own ``sslproto`` but with three things it cannot do:

* **The ClientHello is read before the handshake starts** (:func:`parse_client_hello`): the
  server name and the ALPN list are known before a certificate is chosen, so an ACME
  TLS-ALPN-01 validation (``acme-tls/1``) gets its challenge certificate and nobody else does.
* **A failed handshake sends its alert.** asyncio and uvloop drop the connection without
  flushing what OpenSSL wrote, so a client of an unknown name saw "unexpected EOF" instead of
  ``unrecognized_name``; here the outgoing bytes are written before the socket closes.
* **The server name and protocol are facts of the connection** (``get_extra_info("sni")``,
  ``"alpn"``): the HTTP layer refuses a request whose Host names another site (421).

The HTTP protocol on top sees an ordinary transport (``write``, ``close``, ``abort``,
``pause_reading``, ``resume_reading``, ``get_extra_info``) and is created only once the
handshake succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

__all__ = ["ClientHello", "TlsConnection", "parse_client_hello"]

_log = logging.getLogger("lbrec.proxy.tls")

_READ = 65536
_MAX_HELLO = 16384 + 5  # one TLS record: a ClientHello larger than that is read as unknown


# A request line's start: a token and a space (a TLS record starts with 0x16, never a letter)
_PLAIN_HTTP = re.compile(rb"^[A-Z]{3,10} ")
_PLAIN_HTTP_BODY = b"This is the HTTPS port: use https://\n"
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY)
)


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None
    alpn: tuple[str, ...]


def parse_client_hello(data: bytes) -> ClientHello | None:
    """PURE. The server name and ALPN protocols of the ClientHello at the start of ``data``;
    None when ``data`` does not (yet) hold a whole one in its first record. Only reads: a
    malformed hello is OpenSSL's to refuse."""
    if len(data) < 5 or data[0] != 22:
        return None
    length = int.from_bytes(data[3:5], "big")
    body = data[5 : 5 + length]
    if len(body) < length or len(body) < 4 or body[0] != 1:
        return None
    hello_length = int.from_bytes(body[1:4], "big")
    hello = body[4 : 4 + hello_length]
    if len(hello) < hello_length:
        return None
    try:
        at = 2 + 32  # client_version, random
        at += 1 + hello[at]  # session id
        at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher suites
        at += 1 + hello[at]  # compression methods
        end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
        at += 2
        name: str | None = None
        alpn: list[str] = []
        while at + 4 <= end:
            kind = int.from_bytes(hello[at : at + 2], "big")
            size = int.from_bytes(hello[at + 2 : at + 4], "big")
            ext = hello[at + 4 : at + 4 + size]
            at += 4 + size
            if kind == 0 and len(ext) >= 5 and ext[2] == 0:  # server_name, host_name
                size_name = int.from_bytes(ext[3:5], "big")
                name = ext[5 : 5 + size_name].decode("ascii", "replace").lower() or None
            elif kind == 16 and len(ext) >= 2:  # application_layer_protocol_negotiation
                position = 2
                while position < len(ext):
                    step = ext[position]
                    alpn.append(ext[position + 1 : position + 1 + step].decode("ascii", "replace"))
                    position += 1 + step
    except IndexError:
        return None
    return ClientHello(name, tuple(alpn))


class TlsConnection(asyncio.Protocol):
    """One TLS connection: the socket's protocol, and the transport of ``app``."""

    def __init__(
        self,
        choose: Callable[[ClientHello | None], ssl.SSLContext],
        app_factory: Callable[[str | None], asyncio.Protocol],
        *,
        handshake_timeout: float = 10.0,
        on_failure: Callable[[str], None] | None = None,
        handshaking: set[object] | None = None,
    ) -> None:
        """``handshaking``: the set this connection is in while its handshake runs (a
        server's shutdown waits for them)."""
        self._handshaking = handshaking
        self._choose = choose
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self._on_failure = on_failure
        self._socket: asyncio.Transport | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = None
        self._hello = b""
        self._app: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._app_reading_paused = False
        self.hello: ClientHello | None = None

    # -- the socket's side ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._socket = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        if self._handshaking is not None:
            self._handshaking.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_too_slow)

    def data_received(self, data: bytes) -> None:
        if self._sslobj is None:
            self._hello += data
            if _PLAIN_HTTP.match(self._hello):
                self._refuse_plain_http()
                return
            self.hello = parse_client_hello(self._hello)
            if self.hello is None and len(self._hello) < _MAX_HELLO and self._hello[:1] == b"\x16":
                return  # wait for the rest of the ClientHello
            context = self._choose(self.hello)
            self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
            data, self._hello = self._hello, b""
        self._incoming.write(data)
        if self._app is None:
            self._handshake()
        if self._app is not None:
            self._pump()

    def eof_received(self) -> bool | None:
        self._incoming.write_eof()
        if self._app is not None and self._sslobj is not None:
            self._pump()
            return self._app.eof_received()
        self._drop("the client closed the connection during the handshake")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshaking is not None:
            self._handshaking.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._app is not None:
            app, self._app = self._app, None
            app.connection_lost(exc)
        self._socket = None

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # -- TLS ------------------------------------------------------------------------------
    def _handshake(self) -> None:
        assert self._sslobj is not None
        try:
            self._sslobj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self._flush()
            return
        except (ssl.SSLError, ValueError) as err:
            self._flush()  # the alert OpenSSL wrote: unrecognized_name, protocol_version, ...
            self._drop(f"handshake failed: {getattr(err, 'reason', None) or err}")
            return
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._handshaking is not None:
            self._handshaking.discard(self)
        app = self._app_factory(self._sslobj.selected_alpn_protocol())
        self._app = app
        app.connection_made(self)  # type: ignore[arg-type]

    def _pump(self) -> None:
        """Hand every whole record received to the app (it may close us while reading)."""
        sslobj = self._sslobj
        while sslobj is not None and self._app is not None and not self._app_reading_paused:
            try:
                chunk = sslobj.read(_READ)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except ssl.SSLZeroReturnError:  # close_notify: as an end of stream
                self._flush()
                if self._app is not None and not self._app.eof_received():
                    self.close()
                break
            except ssl.SSLError as err:
                self._flush()
                self._drop(f"TLS error: {err.reason or err}")
                break
            if not chunk:
                break
            self._app.data_received(chunk)
        self._flush()  # session tickets, key updates

    def _flush(self) -> None:
        if self._outgoing.pending and self._socket is not None:
            self._socket.write(self._outgoing.read())

    def _refuse_plain_http(self) -> None:
        """Plain HTTP on the TLS port: say so in HTTP (nginx's 400 "plain HTTP request was
        sent to HTTPS port"), rather than a TLS alert the client cannot read."""
        if self._socket is not None:
            self._socket.write(_PLAIN_HTTP_ANSWER)
        self._drop("plain HTTP on the TLS listener")

    def _handshake_too_slow(self) -> None:
        self._timer = None
        self._drop(f"no handshake within {self._handshake_timeout:g}s")

    def _drop(self, why: str) -> None:
        if self._on_failure is not None:
            self._on_failure(why)
        if self._socket is not None and not self._socket.is_closing():
            self._socket.close()  # after the bytes written above

    # -- the app's transport --------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._sslobj is None or self._socket is None or self._closing:
            return
        view = memoryview(data)
        while view:
            written = self._sslobj.write(view)
            view = view[written:]
        self._flush()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def close(self) -> None:
        """close_notify, then close the socket once what is written is sent."""
        if self._closing:
            return
        self._closing = True
        if self._sslobj is not None and self._app is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._sslobj.unwrap()
            self._flush()
        if self._socket is not None:
            self._socket.close()

    def abort(self) -> None:
        self._closing = True
        if self._socket is not None:
            self._socket.abort()

    def is_closing(self) -> bool:
        return self._closing or self._socket is None or self._socket.is_closing()

    def pause_reading(self) -> None:
        self._app_reading_paused = True
        if self._socket is not None:
            self._socket.pause_reading()

    def resume_reading(self) -> None:
        if not self._app_reading_paused:
            return
        self._app_reading_paused = False
        if self._socket is not None:
            self._socket.resume_reading()
        self._pump()  # records that arrived before the pause

    def is_reading(self) -> bool:
        return not self._app_reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._socket is not None:
            self._socket.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._socket.get_write_buffer_size() if self._socket is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._sslobj
        if name == "sni":
            return self.hello.server_name if self.hello is not None else None
        if name == "alpn":
            return self._sslobj.selected_alpn_protocol() if self._sslobj is not None else None
        if name == "tls":
            return True
        if self._socket is None:
            return default
        return self._socket.get_extra_info(name, default)
