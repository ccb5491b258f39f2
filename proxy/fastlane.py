"""The fast lane: plain request and answer heads, recognised by one regular expression each.

Through httptools, llhttp calls back into Python once per header, and the general path then
walks the headers twice more (:func:`proxy.framing.check_request` and the head builders in
:mod:`proxy.http`): about half of the proxy's CPU per request. Most heads need none of that:
a ``GET`` whose headers are all ordinary, an answer with one Content-Length. This module
recognises exactly those *plain* heads with one ``re`` match each (C code, no callback) and
returns what the general path would have derived from them. Anything else, however slightly
different, is not matched and goes the general way, where every framing decision is made.

The lane is a strict subset of the general path, never a second opinion:

* every byte of a plain head is one the general path reads the same way (visible ASCII only,
  ``": "`` after the name, no whitespace around values, CRLF line ends);
* no header the general path treats specially is plain: Host (exactly one, valid), the
  framing headers, hop-by-hop headers and anything ``Connection`` could name, forwarding
  headers, ``Expect``, ``X-Request-ID``, names with ``_``;
* requests are ``GET``/``HEAD`` in origin form, HTTP/1.1, with no body, alone in their read;
* answers are HTTP/1.1, 2xx-5xx but 204 and 304, with exactly one Content-Length.

Its whole surface is one seam per direction and the connection's invariant:
:func:`take_request` (a read -> the :class:`~proxy.framing.RequestHead` of a plain request, or
None), :func:`take_answer` (an answer's first read -> a :class:`PlainAnswer` with every byte
decision made, or None) and :meth:`RequestLane.open` (when a client connection may offer a
read to the lane at all). ``fast_lane=False`` (a :class:`~proxy.server.ProxyServer` option)
turns both directions off: everything then goes the general way.

tests/proxy/test_fastlane.py proves it: over the smuggling corpus and generated heads, what
the lane accepts, llhttp plus the general path accept too, with the same bytes sent on.
"""

from __future__ import annotations

import re

from .framing import HOST_PATTERN, MAX_HEADER_FIELDS, RequestHead

__all__ = [
    "PLAIN_ANSWER",
    "PLAIN_REQUEST",
    "PlainAnswer",
    "RequestLane",
    "relayed_answer_head",
    "take_answer",
    "take_request",
]

# Header names of the lane: RFC 9110 token characters without "_" (dropped by the general
# path), none of them special there (the negative look-ahead matches whole names only).
_NAME = rb"[!#$%&'*+.^`|~0-9A-Za-z-]++"
# Visible ASCII words joined by single spaces (no OWS around, no tab, no obs-text). Possessive
# quantifiers throughout: a head that is not plain fails in one pass, without backtracking.
_VALUE = rb"[!-~]++(?: [!-~]++)*+"
# Names the general path treats specially in both directions (framing, hop-by-hop), and in
# requests only (Host, forwarding headers, Expect, X-Request-ID).
_HOP_NAMES = (
    rb"content-length|transfer-encoding|connection|keep-alive|te|trailer|upgrade|proxy-" + _NAME
)
_REQUEST_NAMES = (
    rb"host|" + _HOP_NAMES + rb"|expect|forwarded|x-real-ip|x-request-id|x-forwarded-" + _NAME
)
_TARGET = rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*"  # RFC 3986 pchar / "/" / "?": no "#"
_KEEP_ALIVE = rb"(?i:connection): (?i:keep-alive)"


def _plain_lines(special: bytes) -> bytes:
    """Any number of plain header lines: ``name: value`` whose name is none of ``special``
    (case-insensitive; the negative look-ahead matches whole names only), or
    ``Connection: keep-alive``."""
    line = rb"(?!(?i:" + special + rb"):)" + _NAME + rb": " + _VALUE
    return rb"(?:(?:" + line + rb"|" + _KEEP_ALIVE + rb")\r\n)*+"


_REQUEST_LINES = rb"(" + _plain_lines(_REQUEST_NAMES) + rb")"
PLAIN_REQUEST = re.compile(
    rb"(GET|HEAD) ("
    + _TARGET
    + rb") HTTP/1\.1\r\n"
    + _REQUEST_LINES
    + rb"(?i:host): ("
    + HOST_PATTERN
    + rb")\r\n"
    + _REQUEST_LINES
    + rb"\r\n"
)
"""``fullmatch`` over one read: method, target, headers before Host, Host, headers after.
``Connection: keep-alive`` (browsers send it) is allowed and is no header to forward."""

_ANSWER_LINES = _plain_lines(_HOP_NAMES)
PLAIN_ANSWER = re.compile(
    rb"HTTP/1\.1 ([2-5][0-9][0-9]) ([ -~]*)\r\n"
    + _ANSWER_LINES
    + rb"(?i:content-length): ([0-9]{1,18})\r\n"
    + _ANSWER_LINES
    + rb"\r\n"
)
"""``match`` at the start of an answer: status, reason, Content-Length; ``end()`` is where the
body starts. ``Connection: keep-alive`` (what nginx sends) is allowed and must be cut out of
what is relayed (:func:`relayed_answer_head`)."""

# a whole line: after a CRLF (values hold no CR or LF), up to the next one
_KEEP_ALIVE_AFTER_CRLF = re.compile(rb"\r\n" + _KEEP_ALIVE + rb"(?=\r\n)")


def take_request(data: bytes) -> RequestHead | None:
    """The request seam: the head :func:`proxy.framing.check_request` makes of ``data`` when it
    is one whole plain request (a :data:`PLAIN_REQUEST` ``fullmatch``), else None. Its
    ``headers`` are parsed from ``raw_headers`` only if something reads them."""
    match = PLAIN_REQUEST.fullmatch(data)
    if match is None:
        return None
    method, target, before, host, after = match.groups()
    raw = before + after if after else before
    if raw.count(b"\n") >= MAX_HEADER_FIELDS:  # with Host, one too many: the general way's 431
        return None
    if b"live\r\n" in raw:
        raw = _KEEP_ALIVE_AFTER_CRLF.sub(b"", b"\r\n" + raw)[2:]
    # method, target, http11, host, content_length, chunked, upgrade, expect_continue,
    # header_fields, forwarded, request_id, raw_headers (positional: the hot path)
    return RequestHead(method, target, True, host, None, False, None, False, None, (), None, raw)


class RequestLane:
    """The lane's state on one client connection: whether it is on, and whether llhttp is at a
    message boundary (set by the connection's ``on_message_begin``/``on_message_complete``)."""

    __slots__ = ("at_boundary", "enabled")

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.at_boundary = True  # llhttp holds no byte of an unfinished message

    def open(self, busy: bool) -> bool:
        """The connection's lane invariant: a read may be offered to :func:`take_request` only
        when the lane is on, no request is in flight or queued (``busy``), and llhttp holds no
        byte of an unfinished message. Otherwise a read that looks like a whole request can be
        the rest of a head begun in an earlier read, and RFC 9112 reads it as that head's
        header lines (a review found the case: tests/proxy/test_fastlane_stream.py)."""
        return self.enabled and self.at_boundary and not busy


class PlainAnswer:
    """What :func:`take_answer` decided about a plain answer's first read."""

    __slots__ = ("relayed", "remaining", "reusable", "status")

    def __init__(self, status: int, relayed: bytes, remaining: int, reusable: bool) -> None:
        self.status = status
        self.relayed = relayed  # for the client now: the head as relayed, the body read so far
        self.remaining = remaining  # body bytes still to come (relayed as they are)
        self.reusable = reusable  # False: bytes after the body, the connection is not reused

    def body(self, data: bytes) -> bytes:
        """Of ``data``, the answer's next read, what is its body (to relay as it is): counted
        down from Content-Length; bytes after the body are cut and end the reuse."""
        remaining = self.remaining
        if len(data) <= remaining:
            self.remaining = remaining - len(data)
            return data
        self.reusable = False
        self.remaining = 0
        return data[:remaining]


def take_answer(
    data: bytes, request: RequestHead, *, keep_alive: bool, max_header_bytes: int
) -> PlainAnswer | None:
    """The answer seam: ``data``, the first read of the answer to ``request``, relayed without
    a parser when the request is an HTTP/1.1 ``GET`` (not ``HEAD``: its answer has no body
    whatever the length says) and ``data`` holds a whole plain head (:data:`PLAIN_ANSWER`) of a
    status with a body (not 204 or 304) within ``max_header_bytes``; else None, and the
    answer goes the general way from its first byte. ``keep_alive``: whether the client
    connection stays open after it (``Connection: close`` is added when not). Bytes after the
    body are relayed no further and end the connection's reuse, as in the general path."""
    if not request.http11 or request.method == b"HEAD":
        return None
    plain = PLAIN_ANSWER.match(data)
    if plain is None:
        return None
    status_text, length_text = plain.group(1, 3)
    status = int(status_text)
    end = plain.end()
    if status in (204, 304) or end > max_header_bytes:
        return None
    length = int(length_text)
    head = data[:end]
    relayed = relayed_answer_head(head, keep_alive=keep_alive)
    received = len(data) - end
    if received > length:  # bytes after the body: relayed no further, never reused
        return PlainAnswer(status, relayed + data[end : end + length], 0, False)
    if relayed is not head:
        data = relayed + data[end:]
    return PlainAnswer(status, data, length - received, True)


def relayed_answer_head(head: bytes, *, keep_alive: bool) -> bytes:
    """A :data:`PLAIN_ANSWER` head as the general path relays it to an HTTP/1.1 client: the
    hop-by-hop ``Connection`` lines cut, ``Connection: close`` added when it closes."""
    if b"live\r\n" in head:
        at = head.find(b"\r\nConnection: keep-alive\r\n")  # nginx's spelling, alone
        if at >= 0 and head.count(b"live\r\n") == 1:
            head = head[:at] + head[at + 24 :]
        else:
            head = _KEEP_ALIVE_AFTER_CRLF.sub(b"", head)
    if keep_alive:
        return head
    return head[:-2] + b"Connection: close\r\n\r\n"
