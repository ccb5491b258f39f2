"""Reading HTTP/1.1 requests off one client connection, through llhttp (httptools).

A :class:`RequestReader` is the parser's callback object for one
:class:`~proxy.downstream.ClientConnection`: it caps what llhttp would buffer without limit
(an unfinished head, a chunked body's trailers), checks each head (:func:`proxy.framing.
check_request`, the size limits) and hands the connection each request it accepts
(``ClientConnection.accept``), then its body and its end. Everything else (the pipeline, the
answers, flow control, timeouts) is the connection's. The fast lane (proxy/fastlane.py) takes
its reads before they reach the reader, only while the reader is between two messages
(``RequestLane.at_boundary``, kept here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from .framing import MAX_HEADER_FIELDS, Rejection, check_request

if TYPE_CHECKING:
    from .downstream import ClientConnection

__all__ = ["RequestReader"]

_HEAD_SLACK = 64 * 1024  # a received chunk may hold the head plus the start of the body


class RequestReader:
    """The llhttp side of one client connection."""

    __slots__ = (
        "_after_chunk_header",
        "_header_bytes",
        "_headers",
        "_in_head",
        "_raw_head",
        "_too_large",
        "_trailer_raw",
        "_url",
        "conn",
        "parser",
    )

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self._in_head = True
        self._raw_head = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._too_large = False
        self._after_chunk_header = False  # a chunk header parsed, no data yet (or: trailers)
        self._trailer_raw = 0

    def feed(self, data: bytes) -> bool:
        """Parse ``data``; True when llhttp stopped at an Upgrade (the connection then took
        the rest of ``data``)."""
        conn = self.conn
        limit = conn.server.max_header_bytes + _HEAD_SLACK
        if self._in_head:
            # httptools buffers an unfinished header line without limit: cap the raw head.
            if conn.head_started is None:
                conn.head_started = conn.loop.time()
            self._raw_head += len(data)
            if self._raw_head > limit and b"\r\n\r\n" not in data:
                if len(self._url) > conn.server.max_header_bytes:  # RFC 9112 3: 414
                    conn.bad_request(414, "request target too long")
                else:
                    conn.bad_request(431, "request header fields too large")
                return False
        elif self._after_chunk_header:
            # Trailer fields (and chunk extensions) are buffered by httptools: cap them too.
            self._trailer_raw += len(data)
            if self._trailer_raw > limit:
                conn.bad_request(431, "request trailer fields too large")
                return False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            conn.upgraded(data[exc.args[0] :])
            return True
        except httptools.HttpParserError:
            # Inside the request being parsed: never forwarded. Between requests (garbage
            # after a pipelined one, data after Connection: close): those are answered.
            conn.bad_request(400, "bad request")
        return False

    def restart(self) -> None:
        """A new parser after an Upgrade the proxy ignores (h2c...): the next request."""
        self.parser = httptools.HttpRequestParser(self)
        self.conn.lane.at_boundary = True

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        conn = self.conn
        conn.lane.at_boundary = False
        if conn.head_started is None:  # a head begun after another in the same read
            conn.head_started = conn.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # after the head: a chunked request's trailers, never forwarded
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.conn.server.max_header_bytes:
            self._too_large = True
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        conn = self.conn
        if conn.closed or conn.refusing:
            return
        parser = self.parser
        conn.idle_since = None
        conn.head_started = None
        self._in_head = False
        self._raw_head = 0
        if len(self._url) > conn.server.max_header_bytes:
            conn.bad_request(414, "request target too long")  # RFC 9112 3, as nginx
            return
        if self._too_large or self._header_bytes > conn.server.max_header_bytes:
            conn.bad_request(431, "request header fields too large")
            return
        if len(self._headers) > MAX_HEADER_FIELDS:
            conn.bad_request(431, "too many header fields")
            return
        head = check_request(
            parser.get_method(), self._url, parser.get_http_version(), self._headers
        )
        # Reset for the next message here rather than in an on_message_begin callback (one
        # callback less per request).
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        if isinstance(head, Rejection):
            conn.bad_request(head.status, head.reason)
            return
        if parser.should_upgrade() and (head.chunked or head.content_length):
            # llhttp ends any request it reads as an upgrade at its head (also one named by
            # Proxy-Connection) and never reads its body: the proxy and a backend would
            # disagree on where the next request starts.
            conn.bad_request(400, "Upgrade request with a body")
            return
        limit = conn.server.max_body_bytes
        if limit and head.content_length is not None and head.content_length > limit:
            conn.bad_request(413, "request body too large")
            return
        conn.accept(head, keep_alive=parser.should_keep_alive() and head.upgrade is None)

    def on_body(self, body: bytes) -> None:
        self._after_chunk_header = False
        parsing = self.conn.parsing
        if parsing is not None:
            parsing.feed_body(body)

    def on_chunk_header(self) -> None:
        self._after_chunk_header = True
        self._trailer_raw = 0

    def on_chunk_complete(self) -> None:
        self._after_chunk_header = False

    def on_message_complete(self) -> None:
        self._in_head = True  # whatever follows starts the next request head
        self._after_chunk_header = False
        conn = self.conn
        conn.lane.at_boundary = True
        if conn.parsing is not None:
            conn.parsing.body.end()
