"""The client side of the data path: one asyncio Protocol per HTTP/1.1 client connection.
(Just over 400 lines on purpose: one class, compiled by mypyc, whose slots and Downstream
methods are one connection's state; its request reading is already in proxy/reader.py.)

One :class:`ClientConnection` per accepted socket. Its reads go to the fast lane or to its
:class:`~proxy.reader.RequestReader` (llhttp); each accepted request becomes an
:class:`~proxy.exchange.Exchange`, run one at a time (pipelined requests wait, with reading
paused). It is their HTTP/1.1 :class:`~proxy.contracts.Downstream`: it encodes their answers
and decides keep-alive towards the client (:meth:`ClientConnection.keeps_alive`, only there).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, cast

from .exchange import Exchange
from .fastlane import PlainAnswer, RequestLane, take_answer, take_request
from .framing import RequestHead
from .http import (
    LAST_CHUNK,
    ResponseFraming,
    build_response_head,
    chunk,
    forwarding_lines,
    simple_response,
)
from .reader import RequestReader

if TYPE_CHECKING:
    from .server import ProxyServer
    from .tunnel import Tunnel

__all__ = ["ClientConnection"]

_PAUSE_BODY = 1  # body arrived before a backend was attached
_PAUSE_UPSTREAM = 2  # backend socket buffer full
_PAUSE_PIPELINE = 4  # a pipelined request waits for the previous one
MAX_PIPELINE = 32  # parsed requests waiting behind the one in flight; past it: close after


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_framing",
        "_held",
        "_pause",
        "_pending",
        "active",
        "bytes_out",
        "client_ip",
        "closed",
        "closing",
        "forwarding",
        "head_started",
        "idle_since",
        "lane",
        "loop",
        "parsing",
        "proto",
        "queue",
        "reader",
        "refusing",
        "secure",
        "server",
        "sni",
        "task",
        "transport",
        "trusted",
        "tunnel",
        "write_paused",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.client_ip = "unknown"
        self.forwarding = b""  # X-Forwarded-For/-Proto lines for this client (fast lane)
        self.bytes_out = 0  # every byte written to the client (access log: an answer's size)
        self.active: Exchange | None = None  # the exchange being forwarded
        self.parsing: Exchange | None = None  # the exchange whose body is being parsed
        self.queue: deque[Exchange] = deque()
        self.tunnel: Tunnel | None = None
        self.task: asyncio.Task[None] | None = None  # a backend connect in progress
        self.closed = False
        self.closing = False  # graceful shutdown: close after the current exchange
        self.write_paused = False
        self.idle_since: float | None = None
        self.head_started: float | None = None  # first byte of a head not yet complete
        self.trusted = False  # the peer is in trusted_proxies: its X-Forwarded-* are kept
        self._pause = 0
        self._pending: Exchange | None = None
        self.refusing = False  # parse no further request (MAX_PIPELINE, a bad one behind)
        self._framing = ResponseFraming.NONE  # of the answer being sent (general path)
        self._held: list[bytes] | None = None  # sent between hold() and flush()
        self.lane = RequestLane(enabled=server.fast_lane)
        self.secure = False  # over the TLS listener (proxy/tls_transport.py)
        self.sni: str | None = None  # the TLS server name the client asked for
        self.proto = b"http"
        self.reader = RequestReader(self)  # the parser's callbacks: llhttp's side

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        server = self.server
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
            self.trusted = server.is_trusted(self.client_ip)
        if transport.get_extra_info("tls"):
            self.secure, self.proto = True, b"https"
            self.sni = transport.get_extra_info("sni")
            if server.hsts is not None:
                # the fast lane relays an answer's head as it is: HSTS needs the general way
                self.lane = RequestLane(enabled=False)
        self.forwarding = forwarding_lines(self.client_ip, self.proto)
        if len(server.connections) >= server.max_connections:
            server.refused_connections += 1
            server.answers.answered(503, 0.0)
            self.closed = True
            self.transport.write(simple_response(503, "too many connections", keep_alive=False))
            self.transport.close()
            return
        self.idle_since = self.loop.time()
        self.closing = server.stopping  # made during a drain (a TLS handshake that just ended)
        server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_client(data)
            return
        if self.closed or self.refusing:
            return
        busy = self.active is not None or bool(self.queue)  # in flight, or queued
        if self.lane.open(busy) and len(data) <= self.server.max_header_bytes:
            head = take_request(data)
            if head is not None:
                # The fast lane (proxy/fastlane.py): a plain GET/HEAD, alone in this read.
                self.idle_since = None
                self.head_started = None
                exchange = Exchange(self, head, keep_alive=True)
                self.active = exchange
                exchange.start()
                return
        if self.reader.feed(data):
            return  # an Upgrade: upgraded() took the rest
        # Start after parsing the whole chunk, so head and a small body go out in one write.
        pending = self._pending
        if pending is not None and not self.closed:
            self._pending = None
            self._start(pending)

    def upgraded(self, rest: bytes) -> None:
        """llhttp stopped after a request with Upgrade (or CONNECT, rejected before)."""
        if self.closed:
            return
        exchange = self.parsing
        pending = self._pending
        self._pending = None
        if exchange is not None and exchange.tunnel is not None:
            # A WebSocket handshake: the rest belongs to it, whatever was pipelined before it.
            tunnel = self.tunnel = exchange.tunnel
            if pending is not None:
                self._start(pending)
            if rest:
                tunnel.from_client(rest)
            return
        if pending is not None:
            self._start(pending)
        if exchange is not None and not self.refusing:
            # Any other Upgrade (h2c...) is ignored: an ordinary request, and parsing goes on.
            self.reader.restart()
            if rest:
                self.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.task is not None:  # a backend connect for this client: nobody waits for it
            self.task.cancel()
            self.task = None
        if self.active is not None:
            self.active.client_lost()
        if self.tunnel is not None:
            self.tunnel.client_lost()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        partner = self.active or self.tunnel
        if partner is not None:
            partner.client_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        partner = self.active or self.tunnel
        if partner is not None:
            partner.client_resume_writing()
        elif self.queue and not self.closed:
            self._start_queued()

    def accept(self, head: RequestHead, *, keep_alive: bool) -> None:
        """The reader accepted a request head: its exchange goes now, or waits its turn."""
        exchange = Exchange(self, head, keep_alive=keep_alive)
        self.parsing = exchange
        if self.active is None and self._pending is None:
            self._pending = exchange
        elif len(self.queue) >= MAX_PIPELINE:
            # Answer what is queued, then close: the client retries the rest (RFC 9112 9.3.2).
            self.parsing = None
            self._close_after(self.queue[-1])
        else:
            self.queue.append(exchange)
            self._set_pause(_PAUSE_PIPELINE, True)

    # -- the downstream contract (proxy/contracts.py), for Exchange ----------------------------

    def keeps_alive(self, exchange: Exchange, *, ended: bool) -> bool:
        """Keep-alive towards the client, decided here only: what the request asked, lowered
        by this connection (a bad request behind it...) and by the answer's head, never while
        shutting down; once the answer is whole (``ended``), only if its body was read whole."""
        return exchange.keep_alive and not self.closing and (not ended or exchange.body.complete)

    def relay_plain(self, exchange: Exchange, data: bytes) -> PlainAnswer | None:
        if not self.lane.enabled:
            return None
        keep_alive = self.keeps_alive(exchange, ended=False)
        limit = self.server.max_header_bytes
        plain = take_answer(data, exchange.request, keep_alive=keep_alive, max_header_bytes=limit)
        if plain is not None:
            exchange.keep_alive = keep_alive
            self._framing = ResponseFraming.LENGTH
            self.write(plain.relayed)
        return plain

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        bodyless: bool,
        upgrade: bytes | None,
    ) -> bool:
        if self.secure and (hsts := self.server.hsts) is not None:
            headers = [*headers, hsts]
        head, self._framing, exchange.keep_alive, until_close = build_response_head(
            status,
            reason,
            headers,
            bodyless=bodyless,
            client_http11=exchange.request.http11,
            keep_alive=self.keeps_alive(exchange, ended=False),
            upgrade=upgrade,
        )
        self._send(head)
        return until_close

    def send_continue(self) -> None:
        self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def send_body(self, data: bytes) -> None:
        framing = self._framing
        if framing == ResponseFraming.CHUNKED:
            self._send(chunk(data))
        elif framing != ResponseFraming.NONE:
            self._send(data)

    def send_end(self) -> None:
        if self._framing == ResponseFraming.CHUNKED:
            self._send(LAST_CHUNK)

    def send_error(self, exchange: Exchange, status: int, text: str) -> None:
        """Answer ``exchange`` with a short error of the proxy's own."""
        keep = exchange.keep_alive = self.keeps_alive(exchange, ended=True)
        bare = exchange.request.method == b"HEAD"
        self.write(simple_response(status, text, keep_alive=keep, head_only=bare))

    def hold(self) -> None:
        self._held = []

    def flush(self, *, discard: bool = False) -> None:
        held = self._held
        self._held = None
        if held and not discard:
            self.write(held[0] if len(held) == 1 else b"".join(held))

    def _send(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held.append(data)
        else:
            self.write(data)

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.bytes_out += len(data)
            self.transport.write(data)

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()
            self.closed = True

    def pause_reading_for_body(self, pause: bool) -> None:
        self._set_pause(_PAUSE_BODY, pause)

    def pause_reading_for_upstream(self, pause: bool) -> None:
        self._set_pause(_PAUSE_UPSTREAM, pause)

    def start_tunnel(self, tunnel: Tunnel) -> asyncio.Transport:
        assert self.transport is not None
        self.tunnel = tunnel
        self._set_pause(_PAUSE_BODY | _PAUSE_UPSTREAM | _PAUSE_PIPELINE, False)
        return self.transport

    def exchange_done(self, exchange: Exchange, *, clean: bool) -> None:
        self.active = None
        self.task = None
        if self.parsing is exchange:
            self.parsing = None  # no reference cycles per request: garbage goes by refcount
        if self.closed:
            return
        if exchange.status == 101 and self.tunnel is not None and exchange.tunnel is self.tunnel:
            return  # the connection now belongs to the tunnel
        if not clean or not self.keeps_alive(exchange, ended=True):
            self.closed = True
            assert self.transport is not None
            self.transport.close()
            return
        if self._pause:
            self._set_pause(_PAUSE_UPSTREAM | _PAUSE_BODY, False)
        now = self.loop.time()
        if self.head_started is not None:
            self.head_started = now  # a head begun during the answer: its time starts now
        if self.queue and not self.write_paused:
            self._start_queued()
        else:
            # Idle, or a client that does not read gets no further answers: either way,
            # timeouts.idle closes it if nothing moves.
            self.idle_since = now

    def _start_queued(self) -> None:
        self.idle_since = None
        nxt = self.queue.popleft()
        if not self.queue:
            self._set_pause(_PAUSE_PIPELINE, False)
        self._start(nxt)

    # -- the server's verbs, and internals ------------------------------------------------------

    def header_timeout(self) -> None:
        """The sweeper's verdict: a request head took longer than ``timeouts.header``."""
        self.head_started = None
        self.bad_request(408, "request header timeout")

    def idle_timeout(self) -> None:
        """The sweeper's verdict: nothing moved for ``timeouts.idle``. A client that does not
        read what it was sent is aborted (a close would wait for it to read, forever)."""
        if self.write_paused:
            self.queue.clear()
            self.abort()
        else:
            self.close_if_idle()

    def close_if_idle(self) -> bool:
        """Graceful shutdown: close now when idle, else after the exchange in flight."""
        self.closing = True
        if self.active is None and self.tunnel is None and not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return True
        return False

    def _start(self, exchange: Exchange) -> None:
        self.active = exchange
        exchange.start()

    def _set_pause(self, flag: int, on: bool) -> None:
        before = self._pause
        after = (before | flag) if on else (before & ~flag)
        if after == before or self.closed or self.transport is None:
            self._pause = after
            return
        self._pause = after
        if before == 0:
            self.transport.pause_reading()
        elif after == 0:
            self.transport.resume_reading()

    def _close_after(self, last: Exchange) -> None:
        """Parse nothing more; close once ``last`` (the last complete request) is answered."""
        self.refusing = True
        last.keep_alive = False

    def bad_request(self, status: int, message: str) -> None:
        self.parsing = None  # whatever the parser still emits belongs to no request
        last = self.queue[-1] if self.queue else (self._pending or self.active)
        if last is not None and last.body.complete:
            # Complete requests came before the bad one: answer them, then close (the answer
            # to the bad one must never be read as theirs).
            self._close_after(last)
            return
        self._pending = None
        if self.active is None:
            self.server.answers.answered(status, 0.0)
            self.write(simple_response(status, message, keep_alive=False))
            if self.transport is not None and not self.closed:
                self.closed = True
                self.transport.close()
        else:
            self.abort()
