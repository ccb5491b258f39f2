"""Forward one client request to a backend and relay the answer: the data-path core.

:class:`Exchange` is created by the client connection when a request head has been parsed.
Its :meth:`Exchange.run` coroutine picks a backend, takes a pooled keep-alive connection (or
opens one), writes the request head and streams the body, then relays the response as the
bytes arrive. Bytes move in protocol callbacks, transport to transport, with flow control
in both directions; the coroutine only waits for the outcome of each attempt.

Failures map to client answers in exactly one place, :meth:`Exchange.run`:

* connect refused / connect timeout: the request never reached a backend, so it is retried
  on the next backend for every method; with no backend left: 503.
* a reused keep-alive connection that closes before any response byte (the backend closed
  it while idle): retried on a fresh connection, for every method, when the body is replayable.
* reset / EOF before the response on a fresh connection, or a read timeout: retried only for
  idempotent methods; otherwise (or when nothing is left) 502 resp. 504.
* a malformed response: 502 (idempotent methods try the next backend first).
* after the response head was sent to the client nothing can be retried: the client
  connection is aborted so the client sees a truncated answer, never a wrong one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import httptools

from proxy.http import (
    IDEMPOTENT_METHODS,
    LAST_CHUNK,
    ResponseFraming,
    build_request_head,
    build_response_head,
    chunk,
)
from proxy.pool import Backend, Pool

if TYPE_CHECKING:
    from proxy.client import ClientConnection
    from proxy.server import ProxyServer
    from proxy.upstream import UpstreamConnection

__all__ = ["REPLAY_LIMIT", "Exchange"]

_access_log = logging.getLogger("lbrec.proxy.access")

REPLAY_LIMIT = 64 * 1024  # request-body bytes kept for a retry; above it the body is streamed

# Attempt outcomes.
_DONE = 0
_STALE = 1  # connection closed before any response byte (reused: stale keep-alive)
_TIMEOUT = 3  # no progress for timeouts.read before the response head
_BAD = 4  # malformed response
_ABORTED = 5  # failed after the response started, or the client went away
_TUNNEL = 6  # upgraded to a tunnel (WebSocket)

_MAX_STALE_RETRIES = 3


class Exchange:
    """One request, from parsed head to the last byte of the response."""

    __slots__ = (
        "_head",
        "backend",
        "body_chunks",
        "body_complete",
        "body_size",
        "chunked_in",
        "client",
        "content_length",
        "expect_continue",
        "finished",
        "framing",
        "fut",
        "headers",
        "http11",
        "interim",
        "keep_alive",
        "last_activity",
        "method",
        "parser",
        "reason",
        "resp_headers",
        "resp_keep_alive",
        "resp_until_close",
        "response_started",
        "rx",
        "sending",
        "server",
        "spilled",
        "started",
        "status",
        "target",
        "timer",
        "tunnel_pending",
        "upgrade",
        "upstream",
        "upstream_paused",
    )

    def __init__(
        self,
        client: ClientConnection,
        *,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        http11: bool,
        keep_alive: bool,
        chunked_in: bool,
        content_length: int | None,
        expect_continue: bool,
        upgrade: bytes | None,
    ) -> None:
        self.client = client
        self.server: ProxyServer = client.server
        self.method = method
        self.target = target
        self.headers = headers
        self.http11 = http11
        self.keep_alive = keep_alive
        self.chunked_in = chunked_in
        self.content_length = content_length
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self._head: bytes | None = None
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.body_complete = False
        self.spilled = False  # body no longer fully held: not replayable
        self.sending = False  # body bytes go straight to self.upstream
        self.upstream: UpstreamConnection | None = None
        self.upstream_paused = False
        self.backend: Backend | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.fut: asyncio.Future[int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.last_activity = 0.0
        self.started = 0.0
        self.rx = False
        self.interim = False
        self.response_started = False
        self.resp_headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.status = 0
        self.framing = ResponseFraming.NONE
        self.resp_keep_alive = False
        self.resp_until_close = False
        self.tunnel_pending: list[bytes] | None = None
        self.finished = False

    # -- request body, fed by the client connection --------------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self.finished:
            return
        size = self.body_size = self.body_size + len(data)
        limit = self.server.max_body_bytes
        if limit and size > limit:  # chunked body over the limit (Content-Length is checked early)
            self.client.abort()
            self._finish(_ABORTED)
            return
        if self.sending:
            upstream = self.upstream
            assert upstream is not None
            upstream.write(chunk(data) if self.chunked_in else data)
            self.last_activity = self.server.loop.time()
            if not self.spilled:
                if size <= REPLAY_LIMIT:
                    self.body_chunks.append(data)
                else:
                    self.spilled = True
                    self.body_chunks = []
        else:
            self.body_chunks.append(data)
            if size > REPLAY_LIMIT:
                self.client.pause_reading_for_body(True)

    def body_end(self) -> None:
        self.body_complete = True
        if self.sending and self.chunked_in:
            assert self.upstream is not None
            self.upstream.write(LAST_CHUNK)

    def client_lost(self) -> None:
        self._finish(_ABORTED)

    def client_pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.pause_reading()

    def client_resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()
        self.last_activity = self.server.loop.time()

    def tunnel_from_client(self, data: bytes) -> None:
        if self.tunnel_pending is not None:
            self.tunnel_pending.append(data)
        elif self.upstream is not None:
            self.upstream.write(data)

    # -- the request, start to end -------------------------------------------------------------

    async def run(self) -> None:
        server = self.server
        pool: Pool = server.pool
        tried: set[str] = set()
        stale_retries = 0
        error_status, error_text = 503, "no healthy backend available"
        keep_alive = False
        self.started = time.monotonic()
        try:
            while True:
                backend = pool.pick(tried)
                if backend is None:
                    if not pool.backends:
                        error_status, error_text = 503, "no backends configured"
                    keep_alive = self.client.reject(self, error_status, error_text)
                    self._log(error_status, None)
                    return
                conn = backend.conns.take()
                reused = conn is not None
                if conn is None:
                    try:
                        conn = await backend.conns.connect(pool.config.timeouts.connect)
                    except (OSError, TimeoutError) as err:
                        server.passive_failure(backend, f"connect: {err or type(err).__name__}")
                        tried.add(backend.name)
                        continue
                    if self.client.closed:
                        backend.conns.release(conn, server.loop.time())
                        return
                outcome = await self._attempt(backend, conn, pool)
                if outcome == _DONE:
                    keep_alive = self.keep_alive and self.body_complete
                    self._log(self.status, backend)
                    return
                if outcome == _TUNNEL:
                    self._log(101, backend)
                    return
                if outcome == _ABORTED:
                    self.client.abort()
                    self._log(self.status or 499, backend)
                    return
                replayable = not self.spilled and not self.response_started
                idempotent = self.method in IDEMPOTENT_METHODS
                if outcome == _STALE and reused and stale_retries < _MAX_STALE_RETRIES:
                    stale_retries += 1
                    if replayable:
                        continue
                server.passive_failure(backend, _DESCRIPTION[outcome])
                tried.add(backend.name)
                error_status, error_text = _ERROR[outcome]
                if replayable and idempotent:
                    continue
                keep_alive = self.client.reject(self, error_status, error_text)
                self._log(error_status, backend)
                return
        finally:
            self.finished = True
            self.body_chunks = []
            self.client.exchange_done(self, keep_alive=keep_alive)

    def _request_head(self, backend: Backend, pool: Pool) -> bytes:
        head = self._head
        preserve = pool.config.preserve_host
        if head is None or not preserve:
            head = build_request_head(
                self.method,
                self.target,
                self.headers,
                client_ip=self.client.client_ip,
                backend_host=backend.host_header,
                preserve_host=preserve,
                chunked=self.chunked_in,
                upgrade=self.upgrade,
            )
            self._head = head
        return head

    async def _attempt(self, backend: Backend, conn: UpstreamConnection, pool: Pool) -> int:
        server = self.server
        loop = server.loop
        self.backend = backend
        self.upstream = conn
        self.rx = False
        self.interim = False
        self.parser = httptools.HttpResponseParser(self)
        fut = self.fut = loop.create_future()
        conn.listener = self
        backend.inflight += 1
        backend.requests += 1
        if self.upgrade is not None:
            self.tunnel_pending = self.tunnel_pending or []
        head = self._request_head(backend, pool)
        chunks = self.body_chunks
        if chunks:
            if self.chunked_in:
                conn.write(head + b"".join(chunk(c) for c in chunks))
            else:
                conn.write(head + b"".join(chunks))
            if self.body_size > REPLAY_LIMIT:
                self.spilled = True
                self.body_chunks = []
        else:
            conn.write(head)
        if self.body_complete and self.chunked_in:
            conn.write(LAST_CHUNK)
        self.sending = True
        self.client.pause_reading_for_body(False)
        now = loop.time()
        self.last_activity = now
        read_timeout = pool.config.timeouts.read
        self.timer = loop.call_at(now + read_timeout, self._on_timer, read_timeout)
        try:
            outcome = await fut
        finally:
            backend.inflight -= 1
            self.sending = False
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.fut = None
        if outcome == _DONE:
            if self.resp_keep_alive and self.body_complete and not conn.closed:
                backend.conns.release(conn, loop.time())
            else:
                conn.close()
        elif outcome != _TUNNEL:
            conn.abort()
            self.upstream = None
        return outcome

    def _finish(self, outcome: int) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(outcome)
        if outcome == _ABORTED and self.upstream is not None:
            self.upstream.abort()

    def _on_timer(self, read_timeout: float) -> None:
        self.timer = None
        loop = self.server.loop
        deadline = self.last_activity + read_timeout
        now = loop.time()
        if now < deadline or self.client.write_paused:
            self.timer = loop.call_at(max(deadline, now + 0.5), self._on_timer, read_timeout)
            return
        self._finish(_ABORTED if self.response_started else _TIMEOUT)

    # -- upstream side (UpstreamListener) ------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        self.rx = True
        self.last_activity = self.server.loop.time()
        parser = self.parser
        assert parser is not None
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            if self.status == 101 and self.fut is not None:
                self._start_tunnel(data[offset:])
            else:
                self._finish(_ABORTED if self.response_started else _BAD)
        except httptools.HttpParserError:
            self._finish(_ABORTED if self.response_started else _BAD)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.response_started:
            if self.resp_until_close and self.fut is not None and not self.fut.done():
                self.resp_keep_alive = False
                if self.framing == ResponseFraming.CHUNKED:
                    self.client.write(LAST_CHUNK)
                self._finish(_DONE)
            else:
                self._finish(_ABORTED)
        elif not self.rx:
            self._finish(_STALE)
        else:
            self._finish(_BAD)

    def upstream_pause_writing(self) -> None:
        self.upstream_paused = True
        self.client.pause_reading_for_upstream(True)

    def upstream_resume_writing(self) -> None:
        self.upstream_paused = False
        self.client.pause_reading_for_upstream(False)

    # -- response parser callbacks (httptools) -------------------------------------------------

    def on_message_begin(self) -> None:
        self.resp_headers = []
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.resp_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = self.status = parser.get_status_code()
        if status < 200 and status != 101:
            self.interim = True
            if status == 100 and self.expect_continue:
                self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        backend = self.backend
        assert backend is not None
        if status >= 500:
            self.server.passive_failure(backend, f"status {status}")
        elif backend.fails:
            backend.fails = 0
        bodyless = self.method == b"HEAD" or status in (204, 304)
        upgrade = None
        if status == 101:
            upgrade = self.upgrade or b"websocket"
        head, framing, keep_alive = build_response_head(
            status,
            self.reason,
            self.resp_headers,
            bodyless=bodyless,
            client_http11=self.http11,
            keep_alive=self.keep_alive and not self.client.closing,
            upgrade=upgrade,
        )
        self.framing = framing
        self.keep_alive = keep_alive  # towards the client
        self.resp_keep_alive = parser.should_keep_alive()  # the backend connection
        self.resp_until_close = framing != ResponseFraming.NONE and not any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.resp_headers
        )
        self.response_started = True
        self.client.write(head)
        if self.method == b"HEAD":
            # httptools cannot be told this answers a HEAD; finish here, fresh parser next time
            self._finish(_DONE)

    def on_body(self, data: bytes) -> None:
        if self.framing == ResponseFraming.CHUNKED:
            self.client.write(chunk(data))
        elif self.framing != ResponseFraming.NONE:
            self.client.write(data)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.status == 101:
            return  # the tunnel starts when the parser raises HttpParserUpgrade
        if self.framing == ResponseFraming.CHUNKED:
            self.client.write(LAST_CHUNK)
        parser = self.parser
        assert parser is not None
        if not parser.should_keep_alive():
            self.resp_keep_alive = False
        self._finish(_DONE)

    # -- WebSocket tunnel ----------------------------------------------------------------------

    def _start_tunnel(self, rest: bytes) -> None:
        upstream = self.upstream
        assert upstream is not None
        client_transport = self.client.start_tunnel(self)
        upstream.tunnel = client_transport
        upstream.listener = None
        if rest:
            client_transport.write(rest)
        pending = self.tunnel_pending or []
        self.tunnel_pending = None
        for data in pending:
            upstream.write(data)
        self._finish(_TUNNEL)

    # -- access log ----------------------------------------------------------------------------

    def _log(self, status: int, backend: Backend | None) -> None:
        if not self.server.access_log:
            return
        duration_ms = round((time.monotonic() - self.started) * 1000, 2)
        _access_log.info(
            "%s %s %s %d %s %.2fms",
            self.client.client_ip,
            self.method.decode("latin-1"),
            self.target.decode("latin-1"),
            status,
            backend.name if backend else "-",
            duration_ms,
            extra={
                "event": "access",
                "client": self.client.client_ip,
                "method": self.method.decode("latin-1"),
                "path": self.target.decode("latin-1"),
                "status": status,
                "backend": backend.name if backend else None,
                "duration_ms": duration_ms,
            },
        )


_DESCRIPTION = {
    _STALE: "connection closed before response",
    _TIMEOUT: "read timeout",
    _BAD: "malformed response",
}
_ERROR = {
    _STALE: (502, "backend closed the connection"),
    _TIMEOUT: (504, "backend timed out"),
    _BAD: (502, "bad response from backend"),
}
