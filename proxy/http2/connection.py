"""One HTTP/2 connection of the TLS listener (ALPN ``h2``): an asyncio Protocol over ``h2``.

:class:`Http2Connection` is what the TLS layer makes for ``app_factory("h2")``
(proxy/tls_transport.py). Each request stream becomes an :class:`Http2Stream`, the
:class:`~proxy.contracts.Downstream` of one :class:`~proxy.exchange.Exchange`, which forwards it
to a backend over HTTP/1.1 exactly as it does an HTTP/1.1 request (the same pool, retries,
timeouts, access log). What is HTTP/2's own is here:

* **Requests.** The header list becomes a :class:`~proxy.framing.RequestHead` through
  :func:`~.request.request_head` (the downgrade-smuggling rules); a malformed one resets the
  stream, a refused one is answered (400, 405, 413, 414, 431). The exchanges of a read start
  once the whole read is processed: a stream opened and reset in the same read (Rapid Reset)
  never reaches a backend.
* **Request bodies** go to the exchange as DATA frames arrive, and their flow-control window
  is handed back (WINDOW_UPDATE) only as the exchange takes them: while the backend is slow
  (or not chosen yet), the client's stream window closes and it stops sending. What one
  stream can make the proxy hold is its window (64 KiB), and the connection's window bounds
  the sum. Trailers of a request are dropped, as the HTTP/1.1 path drops chunked trailers.
* **Answers** go out as HEADERS and DATA within the peer's windows; what the windows do not
  take yet waits in the stream, up to :data:`STREAM_HIGH` bytes, then the exchange pauses the
  backend (the same back-pressure as a slow HTTP/1.1 client). A stream whose answer waits for
  a window that does not open for ``timeouts.idle`` is reset (the zero-window stall).
* **Limits.** SETTINGS_MAX_CONCURRENT_STREAMS is 100 (``h2`` refuses the 101st), header lists
  are capped (HPACK bombs: the decoder stops at twice ``max_header_bytes``), and
  :class:`~.guard.FrameGuard` reads every frame header before ``h2`` does (floods, oversized
  frames, CONTINUATION floods). A connection that breaks the protocol or floods gets GOAWAY
  (with its error code and the last stream processed) and is closed.
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
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from ..body import NO_BODY
from ..exchange import Exchange
from ..fastlane import PlainAnswer, take_answer
from ..framing import HOP_BY_HOP, Rejection, connection_tokens
from ..http import forwarding_lines
from . import REFUSALS
from .guard import ENHANCE_YOUR_CALM, FrameGuard, Verdict
from .request import Malformed, check_trailers, request_head

if TYPE_CHECKING:
    from ..contracts import ExchangeServer
    from ..server import ProxyServer
    from ..tunnel import Tunnel

__all__ = [
    "MAX_CONCURRENT_STREAMS",
    "REFUSALS",
    "Http2Connection",
    "Http2Stream",
    "app_protocol",
]

_log = logging.getLogger("lbrec.proxy.http2")

MAX_CONCURRENT_STREAMS: Final = 100
STREAM_WINDOW: Final = 65535  # SETTINGS_INITIAL_WINDOW_SIZE: request body held per stream
CONNECTION_WINDOW: Final = 1024 * 1024  # request body held per connection, all streams
STREAM_HIGH: Final = 64 * 1024  # answer bytes waiting for the peer's window: pause the backend
STREAM_LOW: Final = 16 * 1024  # ... and resume it under this
_TICK: Final = 1.0  # seconds between checks of the streams' timeouts (while there are streams)

# Error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0x0, 0x1, 0x2
REFUSED_STREAM, CANCEL = 0x7, 0x8


class Http2Stream:
    """One request stream: the Downstream (proxy/contracts.py) of its exchange."""

    __slots__ = (
        "_held",
        "_told_paused",
        "body_paused",
        "bytes_out",
        "closed",
        "conn",
        "end_pending",
        "end_sent",
        "exchange",
        "exchange_over",
        "last_progress",
        "out",
        "out_paused",
        "out_size",
        "request_ended",
        "sid",
        "task",
        "unacked",
        "upstream_paused",
    )

    def __init__(self, conn: Http2Connection, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.exchange: Exchange | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False  # reset (by either side) or the connection is gone
        self.request_ended = False  # the client's END_STREAM arrived
        self.exchange_over = False
        self.out: deque[bytes] = deque()  # answer bytes the peer's window does not take yet
        self.out_size = 0
        self.out_paused = False  # more than STREAM_HIGH waiting
        self._told_paused = False  # what the exchange was last told
        self.end_pending = False
        self.end_sent = False
        self.bytes_out = 0
        self.unacked = 0  # request body bytes received, window not handed back yet
        self.body_paused = False
        self.upstream_paused = False
        self.last_progress = conn.loop.time()
        self._held: list[tuple[int, Any]] | None = None

    # -- what the exchange reads ---------------------------------------------------------
    @property
    def server(self) -> ExchangeServer:
        return self.conn.server

    @property
    def client_ip(self) -> str:
        return self.conn.client_ip

    @property
    def trusted(self) -> bool:
        return self.conn.trusted

    @property
    def forwarding(self) -> bytes:
        return self.conn.forwarding

    @property
    def secure(self) -> bool:
        return True

    @property
    def sni(self) -> str | None:
        return self.conn.sni

    @property
    def proto(self) -> bytes:
        return b"https"  # HTTP/2 is only offered on the TLS listener (ALPN h2)

    @property
    def write_paused(self) -> bool:
        return self.out_paused or self.conn.write_paused

    # -- the answer ----------------------------------------------------------------------
    def relay_plain(self, exchange: Exchange, data: bytes) -> PlainAnswer | None:
        """The fast lane's answers (proxy/fastlane.py: ``take_answer``), as HEADERS and DATA:
        a plain head holds no hop-by-hop field but ``Connection: keep-alive``, which
        ``take_answer`` cuts, so its lines are the fields the general path would send."""
        conn = self.conn
        if not conn.server.fast_lane:
            return None
        plain = take_answer(
            data, exchange.request, keep_alive=True, max_header_bytes=conn.max_header_bytes
        )
        if plain is None:
            return None
        relayed = plain.relayed
        end = relayed.index(b"\r\n\r\n")
        fields = [(b":status", b"%d" % plain.status)]
        for line in relayed[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b": ")
            fields.append((name.lower(), value))
        if conn.hsts is not None:
            fields.append(conn.hsts)
        body = relayed[end + 4 :]
        self._apply(_HEAD, (fields, not body and not plain.remaining))
        if body:
            self._apply(_BODY if plain.remaining else _LAST, body)
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
        fields = [(b":status", b"%d" % status)]
        has_length = has_te = False
        named: frozenset[bytes] | None = None
        for name, value in headers:
            low = name.lower()
            if low in HOP_BY_HOP:
                if low == b"connection":
                    named = connection_tokens([value])[0] | (named or frozenset())
                elif low == b"transfer-encoding":
                    has_te = True
                continue
            if low == b"content-length":
                has_length = True
            fields.append((low, value))
        if named:
            fields = [f for f in fields if f[0] not in named]
        hsts = self.conn.hsts
        if hsts is not None:
            fields.append(hsts)
        self._op(_HEAD, (fields, bodyless))
        return not bodyless and not has_length and not has_te

    def send_continue(self) -> None:
        self._op(_INFO, [(b":status", b"100")])

    def send_body(self, data: bytes) -> None:
        if data:
            self._op(_BODY, data)

    def send_end(self) -> None:
        self._op(_END, None)

    def send_error(self, exchange: Exchange, status: int, text: str) -> None:
        self.answer(status, text, head_only=exchange.request.method == b"HEAD")

    def answer(self, status: int, text: str, *, head_only: bool = False) -> None:
        """A short plain-text answer of the proxy's own."""
        body = (text + "\n").encode()
        fields = [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        self._op(_HEAD, (fields, head_only))
        if not head_only:
            self._op(_LAST, body)

    def hold(self) -> None:
        self._held = []

    def flush(self, *, discard: bool = False) -> None:
        held = self._held
        self._held = None
        if held and not discard:
            last = len(held) - 1
            for i, (kind, arg) in enumerate(held):
                if kind == _END and i and held[i - 1][0] == _BODY:
                    continue  # sent with the body before it
                if kind == _BODY and i < last and held[i + 1][0] == _END:
                    self._apply(_LAST, arg)  # the body's last frame carries END_STREAM
                else:
                    self._apply(kind, arg)

    def _op(self, kind: int, arg: Any) -> None:
        held = self._held
        if held is not None:
            held.append((kind, arg))
        else:
            self._apply(kind, arg)

    def _apply(self, kind: int, arg: Any) -> None:
        if self.closed or self.end_sent:
            return
        conn = self.conn
        if kind in (_BODY, _LAST):
            if kind == _LAST:
                self.end_pending = True
            if arg:
                self.out.append(arg)
                self.out_size += len(arg)
            self.pump()
            if self.out_size > STREAM_HIGH and not self.out_paused:
                self.out_paused = True
                self.tell_paused()
            return
        if kind == _END:
            self.end_pending = True
            self.pump()
            return
        fields, end = arg if kind == _HEAD else (arg, False)  # _INFO: a 100 Continue
        try:
            conn.h2.send_headers(self.sid, fields, end_stream=end)
        except h2.exceptions.StreamClosedError:  # reset by the peer meanwhile
            self.closed = True
            self.gone()
            return
        if end:
            self.end_pending = self.end_sent = True
            self._ended()
        conn.want_flush()

    def pump(self) -> None:
        """Send what waits, as far as the peer's windows allow."""
        try:
            self._pump()
        except h2.exceptions.StreamClosedError:
            # Reset by the peer in a read whose events are not all handled yet
            self.closed = True
            self.gone()

    def _pump(self) -> None:
        conn = self.conn
        if self.closed or conn.write_paused or self.end_sent:
            return
        h2c = conn.h2
        out = self.out
        sent = False
        while out:
            window = h2c.local_flow_control_window(self.sid)
            if window <= 0:
                conn.blocked.add(self)
                break
            chunk = out[0]
            size = min(window, h2c.max_outbound_frame_size)
            if len(chunk) > size:
                out[0] = chunk[size:]
                chunk = chunk[:size]
            else:
                out.popleft()
            self.out_size -= len(chunk)
            self.bytes_out += len(chunk)
            h2c.send_data(self.sid, chunk, end_stream=not out and self.end_pending)
            conn.guard.data_frames_sent += 1
            sent = True
        if sent:
            self.last_progress = conn.loop.time()
            conn.want_flush()
        if not out and self.end_pending:
            if not sent:
                h2c.end_stream(self.sid)
                conn.want_flush()
            self.end_sent = True
            self._ended()
        elif self.out_paused and self.out_size <= STREAM_LOW:
            self.out_paused = False
            self.tell_paused()

    def tell_paused(self) -> None:
        """Tell the exchange whether the client reads slower than the backend answers."""
        paused = self.write_paused
        exchange = self.exchange
        if paused == self._told_paused or exchange is None or self.exchange_over:
            return
        self._told_paused = paused
        if paused:
            exchange.client_pause_writing()
        else:
            exchange.client_resume_writing()

    def _ended(self) -> None:
        """The answer's END_STREAM is out."""
        self.conn.blocked.discard(self)
        if not self.request_ended:
            # RFC 9113 8.1: the answer is complete before the request: stop the client's body.
            self.reset(NO_ERROR)
        self._release_if_over()

    def abort(self) -> None:
        """The answer cannot be completed: reset the stream (the client sees it failed)."""
        if not self.closed:
            self.reset(INTERNAL_ERROR)
            self.gone()

    # -- flow control and the end --------------------------------------------------------
    def pause_reading_for_body(self, pause: bool) -> None:
        self.body_paused = pause
        if not pause:
            self.ack()

    def pause_reading_for_upstream(self, pause: bool) -> None:
        self.upstream_paused = pause
        if not pause:
            self.ack()

    def ack(self) -> None:
        """Hand the window of the body bytes taken back to the client."""
        if self.unacked and not (self.body_paused or self.upstream_paused) and not self.closed:
            self.conn.h2.acknowledge_received_data(self.unacked, self.sid)
            self.unacked = 0
            self.conn.want_flush()

    def start_tunnel(self, tunnel: Tunnel) -> asyncio.Transport:
        raise RuntimeError("no upgrade over HTTP/2")  # request_head never lets one through

    def exchange_done(self, exchange: Exchange, *, clean: bool) -> None:
        self.exchange_over = True
        self.task = None
        if self.closed or self.end_sent:
            self._release_if_over()
        elif not clean:
            self.reset(INTERNAL_ERROR)
            self.gone()
        else:
            self._op(_END, None)  # a HEAD answer ends here (the general path sends no end)

    # -- the stream's end ----------------------------------------------------------------
    def reset(self, code: int) -> None:
        if self.closed:
            return
        self.closed = True
        conn = self.conn
        conn.blocked.discard(self)
        self.out.clear()
        self.out_size = 0
        if not conn.closed:
            with contextlib.suppress(h2.exceptions.StreamClosedError):  # closed both ways
                conn.h2.reset_stream(self.sid, code)
            conn.want_flush()

    def gone(self) -> None:
        """The client will not read the answer (reset, or the connection lost)."""
        self.closed = True
        if self.task is not None:  # a backend connect: nobody waits for it
            self.task.cancel()
            self.task = None
        exchange = self.exchange
        if exchange is not None and not self.exchange_over:
            exchange.client_lost()  # may end the exchange (exchange_done) right here
            self.exchange_over = True
        self._release_if_over()

    def _release_if_over(self) -> None:
        if (self.exchange is None or self.exchange_over) and (self.closed or self.end_sent):
            self.exchange = None  # no reference cycle: garbage goes by refcount
            self.conn.release(self)

    def check(self, now: float, stall: float) -> None:
        """The connection's timer: the exchange's read timeouts, and the zero-window stall."""
        exchange = self.exchange
        if exchange is not None and not self.exchange_over:
            exchange.check_timeout(now)
        if self.out and not self.closed and now - self.last_progress > stall:
            REFUSALS["zero-window stall"] += 1
            self.reset(CANCEL)
            self.gone()


_HEAD, _INFO, _BODY, _END, _LAST = range(5)  # _LAST: a body and its end


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
        self._starting: list[Http2Stream] = []
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_taken = 0  # the highest stream id taken (GOAWAY's last stream id)
        limit = server.max_header_bytes
        self.max_header_bytes = limit
        self.guard = FrameGuard(max_header_block=2 * limit, now=self.loop.time())
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Every rule of h2's validation is request_head's too (tests/proxy/http2's suite
            # runs without h2's), which resets the one stream where h2 ends the connection,
            # for about 15% less CPU per request (docs/benchmarks.md).
            validate_inbound_headers=False,
            normalize_inbound_headers=False,  # cookies are joined by request_head
            validate_outbound_headers=False,  # answers are built clean here
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limit,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # HPACK bombs: decoding stops (and the connection ends) past twice the limit, from the
        # first header block on (the setting itself binds only once the client acknowledged it).
        self.h2.decoder.max_header_list_size = 2 * limit

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
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = self.loop.time()
        guard = self.guard
        verdict = guard.scan(data, now)
        if verdict is not None:
            self._end(verdict)
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
            self._end(Verdict(code, type(err).__name__, flood=False), written=True)
            return
        try:
            for event in events:
                self._event(event)
                if self.closed:
                    return
            starting = self._starting
            if starting:
                self._starting = []
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

    # -- events --------------------------------------------------------------------------
    def _event(self, event: h2.events.Event) -> None:  # noqa: PLR0912
        if isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_ended = True
                exchange = stream.exchange
                if exchange is not None and exchange.body is not NO_BODY:
                    exchange.body.end()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.closed = True  # h2 has closed it: nothing more is sent on it
                stream.gone()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self.blocked.discard(stream)
                    stream.pump()
            else:
                self._unblock()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._unblock()
        elif isinstance(event, h2.events.TrailersReceived):
            # Dropped, as chunked trailers are on HTTP/1.1; a malformed block still fails the
            # request (RFC 9113 8.1.1), as it would with any header block.
            if check_trailers(event.headers or []) is not None:
                stream = self.streams.get(event.stream_id)
                REFUSALS["malformed"] += 1
                if stream is not None:
                    stream.reset(PROTOCOL_ERROR)
                    stream.gone()
                else:
                    self.h2.reset_stream(event.stream_id, PROTOCOL_ERROR)
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 sends nothing after the peer's GOAWAY: the streams in flight cannot finish.
            if self.streams:
                self.abort()
            else:  # the client is done (curl, h2load, a browser closing an idle connection)
                self._close()
        # PING, SETTINGS ack, PRIORITY, unknown frames: nothing to do (FrameGuard counts them).

    def _request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        assert sid is not None and event.headers is not None
        self._last_taken = max(self._last_taken, sid)
        if self._closing:
            REFUSALS["stream after GOAWAY"] += 1
            self.h2.reset_stream(sid, REFUSED_STREAM)
            return
        ended = event.stream_ended is not None
        server = self.server
        head = request_head(
            event.headers,
            end_stream=ended,
            max_header_bytes=self.max_header_bytes,
            max_body_bytes=server.max_body_bytes,
        )
        stream = Http2Stream(self, sid)
        stream.request_ended = ended
        self.streams[sid] = stream
        self.idle_since = None
        if self._timer is None:
            self._timer = self.loop.call_later(_TICK, self._tick)
        if isinstance(head, Malformed):
            REFUSALS["malformed"] += 1  # the reason names a field: never a key of its own
            server.answers.answered(400, 0.0)
            stream.reset(PROTOCOL_ERROR)
            self.release(stream)
            return
        if isinstance(head, Rejection):
            REFUSALS[f"answered {head.status}"] += 1
            server.answers.answered(head.status, 0.0)
            stream.answer(head.status, head.reason)
            return
        stream.exchange = Exchange(stream, head, keep_alive=True)
        self._starting.append(stream)

    def _data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        data = event.data or b""
        size = event.flow_controlled_length or 0
        if not data and event.stream_ended is None and size:
            verdict = self.guard.count_empty_data()  # padding only
            if verdict is not None:
                self._end(verdict)
                return
        stream = self.streams.get(sid)
        exchange = stream.exchange if stream is not None else None
        if stream is None or exchange is None or stream.closed or stream.exchange_over:
            if size:  # nobody takes it: hand the window back at once
                self.h2.acknowledge_received_data(size, sid)
            return
        if data and exchange.body is not NO_BODY:
            exchange.feed_body(data)
        stream.unacked += size
        stream.ack()

    def _unblock(self) -> None:
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
                self.loop.call_soon(self._close)

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
            self._timer = self.loop.call_later(_TICK, self._tick)

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
        frame.last_stream_id = self._last_taken
        frame.error_code = code
        frame.additional_data = debug
        self._flush()
        if self.transport is not None and not self.closed:
            self.transport.write(frame.serialize())

    def close_if_idle(self) -> bool:
        self.closing = True
        if not self.streams and not self.closed:
            self._close()
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
        self.closed = True
        for stream in list(self.streams.values()):
            stream.gone()
        if self.transport is not None:
            self.transport.close()

    def _close(self) -> None:
        if self.closed:
            return
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _end(self, verdict: Verdict, *, written: bool = False) -> None:
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
                verdict.error_code, verdict.reason.encode(), last_stream_id=self._last_taken
            )
        self._flush()
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
