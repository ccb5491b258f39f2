"""PURE. One HTTP/2 request's header list -> the HTTP/1.1 request head sent to a backend.

HTTP/2 carries the request line in pseudo-header fields and frames the body itself (DATA frames,
END_STREAM); the backend reads HTTP/1.1, where a byte in the wrong place starts another request.
Every field is therefore checked before it can reach an HTTP/1.1 head (the downgrade-smuggling
classes of http2smugl and of RFC 9113 section 8.2), whatever the ``h2`` library has checked
already: these rules are the proxy's own, and hold with ``h2``'s validation off.

:func:`request_head` returns a :class:`~proxy.framing.RequestHead` to forward, a
:class:`Malformed` (RFC 9113 8.1.1: the stream is reset with PROTOCOL_ERROR, nothing is
answered) or a :class:`~proxy.framing.Rejection` (an HTTP answer, the status as for HTTP/1.1):

* malformed: a pseudo-header field unknown, repeated, after a regular field, or missing
  (``:method``, ``:scheme``, ``:path``, or an empty ``:path``); a field name that is empty,
  upper-case or not a token; a value with NUL, CR or LF, or with whitespace at either end; a
  connection-specific field (``connection``, ``keep-alive``, ``proxy-connection``,
  ``transfer-encoding``, ``upgrade``, ``te`` other than ``trailers``); a ``content-length``
  that is not one number; a body announced by ``content-length`` on a request that ends with
  its HEADERS;
* 400: ``:method`` not a token, ``:path`` not origin form (or ``*`` for OPTIONS) or with a
  byte outside visible ASCII, ``:scheme`` not http(s), ``:authority`` and ``host`` that differ,
  an invalid authority (userinfo...), and everything :func:`proxy.framing.check_request` refuses;
* 405: CONNECT (also RFC 8441's extended CONNECT: no WebSocket over HTTP/2) and TRACE;
* 414: a ``:path`` longer than ``max_header_bytes``; 431: the fields over ``max_header_bytes``
  or more than :data:`MAX_FIELDS` of them (the HTTP/1.1 path has the same two limits);
* 413: a ``content-length`` over ``max_body_bytes``.

Trailers (:func:`check_trailers`) are held to the same rules, then dropped.

The head then goes through :func:`~proxy.framing.check_request` like an HTTP/1.1 one (Host,
Content-Length, forwarding headers, X-Request-ID, names with ``_``): one set of rules for what a
backend is sent. A body without ``content-length`` is sent chunked; split ``cookie`` fields are
joined with ``"; "`` (RFC 9113 8.2.3).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final

from ..framing import HOST_PATTERN, MAX_HEADER_FIELDS, Rejection, RequestHead, check_request

__all__ = ["MAX_FIELDS", "Malformed", "check_trailers", "request_head"]

Header = tuple[bytes, bytes]

# Header fields in one request (each cookie crumb counted), as for HTTP/1.1
MAX_FIELDS: Final = MAX_HEADER_FIELDS

_PSEUDO: Final = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
# RFC 9113 8.2.2: never in HTTP/2 (te only as "trailers")
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_NAME: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")  # a token, lower case (RFC 9113 8.2.1)
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_METHOD: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PATH: Final = re.compile(rb"/[!-~]*")  # origin form, visible ASCII only: no SP, no CTL
_AUTHORITY: Final = re.compile(HOST_PATTERN)


@dataclass(frozen=True, slots=True)
class Malformed:
    """RFC 9113 8.1.1: reset the stream (PROTOCOL_ERROR); nothing is forwarded or answered."""

    reason: str


def request_head(  # noqa: PLR0912, PLR0915  one pass over the fields, then the rules in order
    headers: list[Header],
    *,
    end_stream: bool,
    max_header_bytes: int,
    max_body_bytes: int = 0,
) -> RequestHead | Rejection | Malformed:
    """Check one request's decoded fields (names and values as bytes) and make its head.

    ``end_stream``: the HEADERS frame ended the stream (no body follows)."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[Header] = []
    cookies: list[bytes] = []
    hosts: list[bytes] = []
    regular = False
    size = 0
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return Malformed(f"pseudo-header field {name!r} after a regular field")
            if name not in _PSEUDO:
                return Malformed(f"unknown pseudo-header field {name!r}")
            if name in pseudo:
                return Malformed(f"pseudo-header field {name!r} repeated")
            if _BAD_VALUE.search(value) is not None:
                return Malformed(f"invalid value of {name!r}")
            pseudo[name] = value
            continue
        regular = True
        if _NAME.fullmatch(name) is None:
            return Malformed(f"invalid field name {name!r}")
        if value and _BAD_VALUE.search(value) is not None:
            return Malformed(f"invalid value of field {name!r}")
        if name in _CONNECTION_SPECIFIC:
            return Malformed(f"connection-specific field {name!r}")
        size += len(name) + len(value) + 4
        if name == b"te":
            if value.lower() != b"trailers":
                return Malformed("te other than trailers")
            continue  # hop-by-hop: not forwarded
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            hosts.append(value)
        else:
            fields.append((name, value))

    method = pseudo.get(b":method")
    if method is None:
        return Malformed("no :method")
    if method == b"CONNECT" or b":protocol" in pseudo:
        return Rejection(405, "CONNECT is not supported")
    path = pseudo.get(b":path")
    scheme = pseudo.get(b":scheme")
    if not path or scheme is None:
        return Malformed("no :path" if not path else "no :scheme")
    if _METHOD.fullmatch(method) is None:
        return Rejection(400, "invalid :method")
    if len(path) > max_header_bytes:
        return Rejection(414, "request target too long")
    if _PATH.fullmatch(path) is None and not (path == b"*" and method == b"OPTIONS"):
        return Rejection(400, "invalid :path")
    if scheme.lower() not in (b"https", b"http"):
        return Rejection(400, "invalid :scheme")
    if len(fields) + len(hosts) + len(cookies) > MAX_FIELDS:
        return Rejection(431, "too many header fields")
    if size + len(path) > max_header_bytes:
        return Rejection(431, "request header fields too large")

    authority = pseudo.get(b":authority")
    if authority is not None:
        if _AUTHORITY.fullmatch(authority) is None:
            return Rejection(400, "invalid :authority")
        if any(host.lower() != authority.lower() for host in hosts):
            return Rejection(400, ":authority and Host differ")
        host = authority
    elif len(hosts) == 1:
        host = hosts[0]
    elif hosts:
        return Rejection(400, "more than one Host header")
    else:
        return Rejection(400, "no :authority and no Host")
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    fields.append((b"host", host))

    head = check_request(method, path, "1.1", fields)
    if isinstance(head, Rejection):
        return head
    length = head.content_length
    if length is not None:
        if end_stream and length:
            return Malformed("content-length without a body")
        if max_body_bytes and length > max_body_bytes:
            return Rejection(413, "request body too large")
    elif not end_stream:
        # A body whose length only END_STREAM tells: chunked towards the backend.
        head = dataclasses.replace(head, chunked=True)
    return head


def check_trailers(headers: list[Header]) -> Malformed | None:
    """A trailer block: regular fields only, each as in a header block (RFC 9113 8.1)."""
    for name, value in headers:
        if name[:1] == b":":
            return Malformed("pseudo-header field in trailers")
        if _NAME.fullmatch(name) is None or (value and _BAD_VALUE.search(value) is not None):
            return Malformed("invalid trailer field")
        if name in _CONNECTION_SPECIFIC:
            return Malformed("connection-specific trailer field")
    return None
