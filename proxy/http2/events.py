"""What each event of ``h2`` does to an HTTP/2 connection and its streams: a request opens
a stream and its exchange (or is refused), DATA feeds the exchange's body, END_STREAM ends
it, RST_STREAM loses the client, WINDOW_UPDATE and SETTINGS send what waited, trailers are
dropped (a malformed block resets the stream), the client's GOAWAY ends the connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import h2.events
import h2.settings

from ..body import NO_BODY
from ..exchange import Exchange
from ..framing import Rejection
from . import REFUSALS
from .limits import PROTOCOL_ERROR
from .request import Malformed, check_trailers, request_head

if TYPE_CHECKING:
    from .connection import Http2Connection

__all__ = ["on_event"]


def on_event(conn: Http2Connection, event: h2.events.Event) -> None:  # noqa: PLR0912
    """What one event of ``h2`` does to the connection and its streams."""
    if isinstance(event, h2.events.DataReceived):
        _data(conn, event)
    elif isinstance(event, h2.events.RequestReceived):
        _request(conn, event)
    elif isinstance(event, h2.events.StreamEnded):
        stream = conn.streams.get(event.stream_id)
        if stream is not None:
            stream.request_ended = True
            exchange = stream.exchange
            if exchange is not None and exchange.body is not NO_BODY:
                exchange.body.end()
    elif isinstance(event, h2.events.StreamReset):
        stream = conn.streams.get(event.stream_id)
        if stream is not None:
            stream.closed = True  # h2 has closed it: nothing more is sent on it
            stream.gone()
    elif isinstance(event, h2.events.WindowUpdated):
        if event.stream_id:
            stream = conn.streams.get(event.stream_id)
            if stream is not None:
                conn.blocked.discard(stream)
                stream.pump()
        else:
            conn.unblock()
    elif isinstance(event, h2.events.RemoteSettingsChanged):
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            conn.unblock()
    elif isinstance(event, h2.events.TrailersReceived):
        # Dropped, as chunked trailers are on HTTP/1.1; a malformed block still fails the
        # request (RFC 9113 8.1.1), as it would with any header block.
        if check_trailers(event.headers or []) is not None:
            stream = conn.streams.get(event.stream_id)
            REFUSALS["malformed"] += 1
            if stream is not None:
                stream.reset(PROTOCOL_ERROR)
                stream.gone()
            else:
                conn.h2.reset_stream(event.stream_id, PROTOCOL_ERROR)
    elif isinstance(event, h2.events.ConnectionTerminated):
        # h2 sends nothing after the peer's GOAWAY: the streams in flight cannot finish.
        if conn.streams:
            conn.abort()
        else:  # the client is done (curl, h2load, a browser closing an idle connection)
            conn.close()
    # PING, SETTINGS ack, PRIORITY, unknown frames: nothing to do (FrameGuard counts them).


def _request(conn: Http2Connection, event: h2.events.RequestReceived) -> None:
    sid = event.stream_id
    assert sid is not None and event.headers is not None
    ended = event.stream_ended is not None
    stream = conn.open_stream(sid, ended=ended)
    if stream is None:
        return
    server = conn.server
    head = request_head(
        event.headers,
        end_stream=ended,
        max_header_bytes=conn.max_header_bytes,
        max_body_bytes=server.max_body_bytes,
    )
    if isinstance(head, Malformed):
        REFUSALS["malformed"] += 1  # the reason names a field: never a key of its own
        server.answers.answered(400, 0.0)
        stream.reset(PROTOCOL_ERROR)
        conn.release(stream)
        return
    if isinstance(head, Rejection):
        REFUSALS[f"answered {head.status}"] += 1
        server.answers.answered(head.status, 0.0)
        stream.answer(head.status, head.reason)
        return
    stream.exchange = Exchange(stream, head, keep_alive=True)
    conn.starting.append(stream)


def _data(conn: Http2Connection, event: h2.events.DataReceived) -> None:
    sid = event.stream_id
    assert sid is not None
    data = event.data or b""
    size = event.flow_controlled_length or 0
    if not data and event.stream_ended is None and size:
        verdict = conn.guard.count_empty_data()  # padding only
        if verdict is not None:
            conn.end(verdict)
            return
    stream = conn.streams.get(sid)
    exchange = stream.exchange if stream is not None else None
    if stream is None or exchange is None or stream.closed or stream.exchange_over:
        if size:  # nobody takes it: hand the window back at once
            conn.h2.acknowledge_received_data(size, sid)
        return
    if data and exchange.body is not NO_BODY:
        exchange.feed_body(data)
    stream.unacked += size
    stream.ack()
