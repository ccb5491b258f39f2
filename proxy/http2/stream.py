"""One request stream of an HTTP/2 connection: the :class:`~proxy.contracts.Downstream` of its
:class:`~proxy.exchange.Exchange`, which forwards it to a backend over HTTP/1.1 exactly as it
does an HTTP/1.1 request (the same pool, retries, timeouts, access log).

* **Request bodies** go to the exchange as DATA frames arrive, and their flow-control window
  is handed back (WINDOW_UPDATE) only as the exchange takes them: while the backend is slow
  (or not chosen yet), the client's stream window closes and it stops sending. What one
  stream can make the proxy hold is its window (64 KiB), and the connection's window bounds
  the sum. Trailers of a request are dropped, as the HTTP/1.1 path drops chunked trailers.
* **Answers** go out as HEADERS and DATA (:mod:`.heads`) within the peer's windows; what the
  windows do not take yet waits in the stream, up to :data:`~.limits.STREAM_HIGH` bytes, then
  the exchange pauses the backend (the same back-pressure as a slow HTTP/1.1 client). A
  stream whose answer waits for a window that does not open for ``timeouts.idle`` is reset
  (the zero-window stall).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

import h2.exceptions

from ..fastlane import PlainAnswer, take_answer
from . import REFUSALS
from .heads import answer_fields, plain_fields, text_answer
from .limits import CANCEL, INTERNAL_ERROR, NO_ERROR, STREAM_HIGH, STREAM_LOW

if TYPE_CHECKING:
    from ..contracts import ExchangeServer
    from ..exchange import Exchange
    from ..tunnel import Tunnel
    from .connection import Http2Connection

__all__ = ["Http2Stream"]

_HEAD, _INFO, _BODY, _END, _LAST = range(5)  # what a stream sends; _LAST: a body and its end


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
        """The fast lane's answers, as HEADERS and DATA (:func:`~.heads.plain_fields`)."""
        conn = self.conn
        if not conn.server.fast_lane:
            return None
        plain = take_answer(
            data, exchange.request, keep_alive=True, max_header_bytes=conn.max_header_bytes
        )
        if plain is None:
            return None
        fields, body = plain_fields(plain, conn.hsts)
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
        fields, until_close = answer_fields(status, headers, self.conn.hsts)
        self._op(_HEAD, (fields, bodyless))
        return not bodyless and until_close

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
        fields, body = text_answer(status, text)
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
