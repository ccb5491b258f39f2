"""One HTTP/2 connection of the TLS listener (ALPN ``h2``): an asyncio Protocol over ``h2``.

:class:`Http2Connection` is what the TLS layer makes for ``app_factory("h2")``
(proxy/tls_transport.py). It turns frames into streams, each an :class:`~.stream.Http2Stream`
(bodies, answers, the stream's flow control), and keeps what is the connection's own:

* **Requests.** The header list becomes a :class:`~proxy.framing.RequestHead` through
  :func:`~.request.request_head` (the downgrade-smuggling rules); a malformed one resets the
  stream, a refused one is answered (400, 405, 413, 414, 431). The exchanges of a read start
  once the whole read is processed: a stream opened and reset in the same read (Rapid Reset)
  never reaches a backend.
* **Limits** (:mod:`.limits`): SETTINGS_MAX_CONCURRENT_STREAMS is 100 (``h2`` refuses the
  101st), header lists are capped (HPACK bombs), and :class:`~.guard.FrameGuard` reads every
  frame header before ``h2`` does (floods, oversized frames, CONTINUATION floods). A
  connection that breaks the protocol or floods gets GOAWAY (with its error code and the last
  stream processed) and is closed.
* **The end.** Keep-alive is the connection's life: a graceful shutdown sends GOAWAY
  (NO_ERROR, the last stream taken), finishes the streams in flight, then closes; the
  server's sweeper closes an idle connection after ``timeouts.idle``.

To the server it looks like an HTTP/1.1 :class:`~proxy.downstream.ClientConnection` (it is
counted in ``server.connections``, for ``max_connections``, the sweeper and the shutdown):
``active`` is always None (its streams' timeouts are its own timer's), ``head_started`` is
set while a header block is unfinished (``timeouts.header``, then GOAWAY), ``idle_since``
while it has no stream (``timeouts.idle``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from ..exchange import Exchange
from ..http import forwarding_lines
from . import REFUSALS
from .events import on_event
from .guard import ENHANCE_YOUR_CALM, FrameGuard, Verdict
from .limits import (
    CONNECTION_WINDOW,
    MAX_CONCURRENT_STREAMS,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_HIGH,
    STREAM_WINDOW,
    TICK,
    server_h2,
)
from .stream import Http2Stream

if TYPE_CHECKING:
    from ..server import ProxyServer

# What tests and bench import from here: the limits and the stream live beside it.
__all__ = [
    "CONNECTION_WINDOW",
    "MAX_CONCURRENT_STREAMS",
    "REFUSALS",
    "STREAM_HIGH",
    "STREAM_WINDOW",
    "Http2Connection",
    "Http2Stream",
    "app_protocol",
]

_log = logging.getLogger("lbrec.proxy.http2")


class Http2Connection(asyncio.Protocol):
    """One client connection speaking HTTP/2 (server side)."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.client_ip = "unknown"
        self.trusted = False
        self.forwarding = b""
        self.sni: str | None = None
        self.hsts: tuple[bytes, bytes] | None = None
        self.closed = False
        self._closing = False  # GOAWAY sent: no new stream, close once the last one is done
        self.write_paused = False  # the socket's buffer is full
        # What the server's sweeper reads of a client connection (proxy/server.py)
        self.active: Exchange | None = None  # always None: the streams have their own timer
        self.head_started: float | None = None  # an unfinished header block: since when
        self.idle_since: float | None = None
        self.streams: dict[int, Http2Stream] = {}
        self.blocked: set[Http2Stream] = set()  # streams waiting for a window
        self.starting: list[Http2Stream] = []
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last_taken = 0  # the highest stream id taken (GOAWAY's last stream id)
        limit = server.max_header_bytes
        self.max_header_bytes = limit
        self.guard = FrameGuard(max_header_block=2 * limit, now=self.loop.time())
        self.h2 = server_h2(limit)

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
            self.trusted = server.is_trusted(self.client_ip)
        self.sni = transport.get_extra_info("sni")
        self.forwarding = forwarding_lines(self.client_ip, b"https")
        # The front door's Strict-Transport-Security field (proxy/frontdoor.py), h2's lower case
        hsts: tuple[bytes, bytes] | None = getattr(server, "hsts", None)
        if hsts is not None:
            self.hsts = (hsts[0].lower(), hsts[1])
        h2c = self.h2
        h2c.initiate_connection()
        h2c.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        if len(server.connections) >= server.max_connections:
            server.refused_connections += 1
            server.answers.answered(503, 0.0)
            REFUSALS["too many connections"] += 1
            h2c.close_connection(NO_ERROR, b"too many connections", last_stream_id=0)
            self.closed = True
            self.transport.write(h2c.data_to_send())
            self.transport.close()
            return
        self.idle_since = self.loop.time()
        server.connections.add(self)  # type: ignore[arg-type]  # the sweeper's surface
        if server.stopping:  # made during a drain (its TLS handshake just ended): GOAWAY
            self.closing = True
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = self.loop.time()
        guard = self.guard
        verdict = guard.scan(data, now)
        if verdict is not None:
            self.end(verdict)
            return
        # A header block left unfinished is a request head that has not arrived: the
        # server's sweeper gives it timeouts.header, as to an HTTP/1.1 head (slowloris).
        if guard.in_header_block:
            if self.head_started is None:
                self.head_started = now
        elif self.head_started is not None:
            self.head_started = None
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as err:  # h2 has written its GOAWAY
            code = int(getattr(err, "error_code", PROTOCOL_ERROR) or PROTOCOL_ERROR)
            self.end(Verdict(code, type(err).__name__, flood=False), written=True)
            return
        try:
            for event in events:
                on_event(self, event)
                if self.closed:
                    return
            starting = self.starting
            if starting:
                self.starting = []
                for stream in starting:
                    exchange = stream.exchange
                    if not stream.closed and exchange is not None:
                        exchange.start()
        except Exception:
            _log.exception("bug in the HTTP/2 connection", extra={"event": "bug"})
            self.abort()
            return
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for handle in (self._flush_handle, self._timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._timer = None
        for stream in list(self.streams.values()):
            stream.gone()
        self.streams.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.tell_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.pump()
            stream.tell_paused()
        self._flush()

    # -- streams opened ------------------------------------------------------------------
    def open_stream(self, sid: int, *, ended: bool) -> Http2Stream | None:
        """The stream a request opens, its timer started; None after GOAWAY (refused)."""
        self.last_taken = max(self.last_taken, sid)
        if self._closing:
            REFUSALS["stream after GOAWAY"] += 1
            self.h2.reset_stream(sid, REFUSED_STREAM)
            return None
        stream = Http2Stream(self, sid)
        stream.request_ended = ended
        self.streams[sid] = stream
        self.idle_since = None
        if self._timer is None:
            self._timer = self.loop.call_later(TICK, self._tick)
        return stream

    def unblock(self) -> None:
        blocked = list(self.blocked)
        self.blocked.clear()
        for stream in blocked:
            stream.pump()

    # -- writing -------------------------------------------------------------------------
    def want_flush(self) -> None:
        """Write what h2 has to send once this turn of the loop is over (one TLS write)."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- streams -------------------------------------------------------------------------
    def release(self, stream: Http2Stream) -> None:
        if stream.unacked and not self.closed:
            # body bytes nobody will take: the connection's window is handed back for them
            self.h2.acknowledge_received_data(stream.unacked, stream.sid)
            stream.unacked = 0
            self.want_flush()
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]
        self.blocked.discard(stream)
        if not self.streams:
            self.idle_since = self.loop.time()
            if self._closing:
                self.want_flush()
                self.loop.call_soon(self.close)

    def _tick(self) -> None:
        self._timer = None
        if self.closed or not self.streams:
            return
        now = self.loop.time()
        stall = self.server.pool.config.timeouts.idle
        for stream in list(self.streams.values()):
            stream.check(now, stall)
        self._flush()
        if self.streams and not self.closed:
            self._timer = self.loop.call_later(TICK, self._tick)

    # -- the end -------------------------------------------------------------------------
    @property
    def closing(self) -> bool:
        return self._closing

    @closing.setter
    def closing(self, value: bool) -> None:
        """The server's graceful shutdown: GOAWAY now, finish the streams in flight."""
        if value and not self._closing and not self.closed:
            self._closing = True
            self._goaway(NO_ERROR, b"shutting down")

    def _goaway(self, code: int, debug: bytes) -> None:
        """GOAWAY written beside h2 (whose state machine would refuse to send anything after
        its own): the streams up to the last one taken still get their answers."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_taken
        frame.error_code = code
        frame.additional_data = debug
        self._flush()
        if self.transport is not None and not self.closed:
            self.transport.write(frame.serialize())

    def close_if_idle(self) -> bool:
        self.closing = True
        if not self.streams and not self.closed:
            self.close()
            return True
        return False

    def idle_timeout(self) -> None:
        """The sweeper: no stream for ``timeouts.idle``."""
        if self.write_paused:
            self.abort()
        else:
            self.close_if_idle()

    def header_timeout(self) -> None:
        """The sweeper: a header block unfinished for ``timeouts.header``."""
        self.head_started = None
        REFUSALS["header block timeout"] += 1
        self._goaway(ENHANCE_YOUR_CALM, b"header block timeout")
        self._close_with_streams()

    def close(self) -> None:
        if self.closed:
            return
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def end(self, verdict: Verdict, *, written: bool = False) -> None:
        """GOAWAY with ``verdict``'s code and close: a flood or a broken protocol.
        ``written``: h2 refused a frame and has written its GOAWAY already."""
        REFUSALS[verdict.reason if verdict.flood else f"protocol: {verdict.reason}"] += 1
        _log.log(
            logging.INFO if verdict.flood else logging.DEBUG,
            "HTTP/2 connection from %s ended: %s",
            self.client_ip,
            verdict.reason,
            extra={"event": "h2_goaway", "reason": verdict.reason, "code": verdict.error_code},
        )
        if not written:
            self.h2.close_connection(
                verdict.error_code, verdict.reason.encode(), last_stream_id=self.last_taken
            )
        self._flush()
        self._close_with_streams()

    def _close_with_streams(self) -> None:
        """Closed now, its streams lost (their clients will not read their answers)."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.gone()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True


def app_protocol(server: ProxyServer, alpn: str | None) -> asyncio.Protocol:
    """The TLS listener's ``app_factory`` (proxy/tls_transport.py): HTTP/2 for ALPN ``h2``,
    HTTP/1.1 otherwise (``http/1.1`` or no ALPN at all)."""
    if alpn == "h2":
        return Http2Connection(server)
    from ..downstream import ClientConnection

    return ClientConnection(server)
