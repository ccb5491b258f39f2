"""Framing decisions for one HTTP/1.1 message head: RFC 9112 section 6.3, applied strictly.

Pure functions over parsed heads (no I/O). llhttp (through httptools, strict mode) has already
rejected the syntax errors it knows (bare CR/LF, obs-fold, whitespace before the colon, control
bytes, bad chunk sizes, duplicate Content-Length, Content-Length with Transfer-Encoding); the
checks here do not rely on that and repeat every decision that decides where one message ends,
so the proxy's reading can never differ from the one it sends on.

Request side, :func:`check_request` returns a :class:`RequestHead` to forward or a
:class:`Rejection` (status as nginx answers it, then the connection closes):

* Transfer-Encoding: only exactly ``chunked`` (any case); any other coding or list is 501;
  with Content-Length, twice, or in an HTTP/1.0 request: 400.
* Content-Length: one field of 1-18 ASCII digits (leading zeros are normalised away); anything
  else (signs, spaces, hex, lists, a second field even with the same value): 400.
* Host: exactly one in HTTP/1.1 (none or two: 400), a valid ``host[:port]`` without userinfo;
  an absolute-form target replaces it (RFC 9112 3.2.2) and must agree with a Host that is
  sent; the target goes on in origin form.
* CONNECT and TRACE: 405; HTTP/0.9: 400; versions other than 1.0/1.1: 505.
* Header names with ``_`` are dropped (as nginx's ``underscores_in_headers off``): CGI-style
  backends read ``Content_Length`` as ``Content-Length``.
* The framing the backend sees is the proxy's own: client Content-Length / Transfer-Encoding
  are never forwarded, the proxy writes its own. ``Connection`` never strips a header the
  proxy controls (framing, Host, forwarding headers).
* Upgrade is honoured only for a WebSocket handshake (GET, HTTP/1.1, no body); any other
  Upgrade (h2c...) is dropped and the request forwarded as an ordinary one. (An upgrade
  request with a body is 400 in ``downstream.py``, on llhttp's own verdict.)

Response side, :func:`check_response` names why a backend answer cannot be relayed (the proxy
answers 502 and never reuses that connection), or returns None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HOP_BY_HOP",
    "HOST_PATTERN",
    "MAX_HEADER_FIELDS",
    "PROTECTED",
    "STANDARD_TOKENS",
    "Rejection",
    "RequestHead",
    "check_request",
    "check_response",
    "connection_tokens",
]

Header = tuple[bytes, bytes]

# RFC 9110 7.6.1 plus the de-facto ones; anything named in Connection is hop-by-hop too.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Incoming forwarding headers: kept only from trusted peers (see RequestHead.forwarded).
_FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
    }
)
# Headers the proxy itself writes; a Connection token naming one of them is ignored.
PROTECTED = _FORWARDING | {
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"connection",
    b"upgrade",
}
STANDARD_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})
# Header fields in one request head; past it: 431 (nginx and HAProxy cap the count too, HAProxy's
# tune.http.maxhdr is 101). The same for HTTP/2 (proxy/http2/request.py).
MAX_HEADER_FIELDS: Final = 100
# host[:port] as Host may carry it (no userinfo); also inside proxy/fastlane.py's patterns
HOST_PATTERN = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::[0-9]{1,5})?"
_HOST = re.compile(HOST_PATTERN)
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#]*)([^#]*)")
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")
_LINE = re.compile(rb"([^:\r\n]+): ([^\r\n]*)\r\n")  # of ``raw_headers``: "name: value\r\n"
_MAX_CL_DIGITS = 18  # fits in int64; llhttp's own limit is the same order


@dataclass(frozen=True, slots=True)
class Rejection:
    """Answer ``status`` with ``reason`` and close the connection; nothing is forwarded."""

    status: int
    reason: str


@dataclass(slots=True)  # not frozen: built once per request, and frozen costs ~2 us here
class RequestHead:
    """A request head as the proxy will forward it (framing decided, headers filtered).

    Treated as immutable: nothing assigns its fields after :func:`check_request`."""

    method: bytes
    target: bytes  # origin form (or ``*``)
    http11: bool
    host: bytes | None  # the authority: Host, or the absolute-form target's
    content_length: int | None
    chunked: bool
    upgrade: bytes | None  # "websocket" when this is a WebSocket handshake
    expect_continue: bool
    # end-to-end headers, in order, minus forwarding headers (read them as ``headers``);
    # None: made from ``raw_headers`` when first read (the fast lane parses only on demand)
    header_fields: tuple[Header, ...] | None
    forwarded: tuple[Header, ...]  # incoming X-Forwarded-* / Forwarded / X-Real-IP, in order
    # the client's X-Request-ID (kept in ``headers``), or None: the proxy then makes one
    request_id: bytes | None = None
    # ``headers`` as the client sent them, ``name: value\r\n`` each (the fast lane's heads,
    # which are byte for byte what the general path would write): copied as one piece
    raw_headers: bytes | None = None
    # the target as the client sent it, when a route's strip_prefix changed ``target``
    # (proxy/frontdoor.py): what forward-auth is told (X-Forwarded-Uri)
    original_target: bytes | None = None

    @property
    def headers(self) -> tuple[Header, ...]:
        """End-to-end headers, in order, minus forwarding headers."""
        fields = self.header_fields
        if fields is None:
            fields = self.header_fields = tuple(_LINE.findall(self.raw_headers or b""))
        return fields


def connection_tokens(values: list[bytes]) -> tuple[frozenset[bytes], bool]:
    """Header names listed in Connection (minus the standard and the protected ones), and
    whether it asks for an upgrade."""
    tokens = {t.strip(b" \t").lower() for value in values for t in value.split(b",")}
    return frozenset(tokens - STANDARD_TOKENS - PROTECTED - {b""}), b"upgrade" in tokens


def _valid_host(value: bytes) -> bool:
    return _HOST.fullmatch(value) is not None


def check_request(  # noqa: PLR0912, PLR0915
    method: bytes, target: bytes, version: str, headers: list[Header]
) -> RequestHead | Rejection:
    """Decide how a parsed request head is framed and forwarded (see the module doc).

    Long on purpose: one pass over the headers, then RFC 9112 section 6.3's rules in the RFC's
    order, each a few lines with its status; split up, the order (which decides what a
    smuggling attempt gets) would be spread over helpers. tests/proxy/desync/ covers each rule."""
    if version == "1.1":
        http11 = True
    elif version == "1.0":
        http11 = False
    elif version == "0.9":
        return Rejection(400, "HTTP/0.9 is not supported")
    else:
        return Rejection(505, "HTTP version not supported")
    if method in (b"CONNECT", b"TRACE"):
        return Rejection(405, f"method {method.decode('latin-1')} is not allowed")

    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    upgrade: bytes | None = None
    expect = False
    request_id: bytes | None = None
    kept: list[Header] = []
    forwarded: list[Header] = []
    for name, value in headers:
        low = name.lower()
        if b"_" in low:
            continue  # Content_Length, X_Forwarded_For...: ambiguous for CGI-style backends
        if low in HOP_BY_HOP:
            if low in (b"connection", b"proxy-connection"):  # llhttp reads both alike
                connection.append(value)
            elif low == b"transfer-encoding":
                codings.append(value)
            elif low == b"upgrade":
                upgrade = value
            continue
        if low == b"host":
            hosts.append(value)
        elif low == b"content-length":
            lengths.append(value)
        elif low in _FORWARDING:
            forwarded.append((name, value))
        else:
            if low == b"expect" and value.strip(b" \t").lower() == b"100-continue":
                expect = http11
            elif low == b"x-request-id":
                # One id per request, as the client sent it if usable (printable ASCII, up to
                # 200 bytes); a second one or an unusable one is dropped (and one made).
                if request_id is not None or _REQUEST_ID.fullmatch(value) is None:
                    continue
                request_id = value
            kept.append((name, value))

    # Target form and authority (RFC 9112 3.2).
    host: bytes | None = None
    if len(hosts) > 1:
        return Rejection(400, "more than one Host header")
    if hosts:
        host = hosts[0].strip(b" \t")
        if not _valid_host(host):
            return Rejection(400, "invalid Host header")
    elif http11:
        return Rejection(400, "HTTP/1.1 request without Host")
    if not target.startswith(b"/"):
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is not None:
            authority, path = absolute.group(1), absolute.group(2)
            if not _valid_host(authority):
                return Rejection(400, "invalid authority in the request target")
            if host is not None and host.lower() != authority.lower():
                return Rejection(400, "Host differs from the request target's authority")
            host = authority
            target = path if path.startswith(b"/") else b"/" + path
        elif not (target == b"*" and method == b"OPTIONS"):
            return Rejection(400, "invalid request target")

    # Message body length (RFC 9112 6.3).
    content_length: int | None = None
    chunked = False
    if codings:
        if len(codings) > 1:
            return Rejection(400, "more than one Transfer-Encoding header")
        if not http11:
            return Rejection(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            return Rejection(400, "both Content-Length and Transfer-Encoding")
        if codings[0].strip(b" \t").lower() != b"chunked":
            return Rejection(501, "unsupported Transfer-Encoding")
        chunked = True
    elif lengths:
        if len(lengths) > 1:
            return Rejection(400, "more than one Content-Length header")
        digits = lengths[0].strip(b" \t")
        if not (digits.isdigit() and len(digits) <= _MAX_CL_DIGITS):
            return Rejection(400, "invalid Content-Length")
        content_length = int(digits)

    named, asks_upgrade = connection_tokens(connection) if connection else (frozenset(), False)
    if named:
        kept = [(n, v) for n, v in kept if n.lower() not in named]
    if upgrade is not None:
        # (An upgrade request with a body is refused by the client connection, on llhttp's
        # own verdict: llhttp never reads that body.)
        is_websocket = (
            asks_upgrade
            and http11
            and method == b"GET"
            and not chunked
            and not content_length
            and b"websocket" in upgrade.lower()
        )
        upgrade = b"websocket" if is_websocket else None
    return RequestHead(
        method=method,
        target=target,
        http11=http11,
        host=host,
        content_length=content_length,
        chunked=chunked,
        upgrade=upgrade,
        expect_continue=expect,
        header_fields=tuple(kept),
        forwarded=tuple(forwarded),
        request_id=request_id,
    )


def check_response(status: int, headers: list[Header], *, upgrade: bytes | None) -> str | None:
    """Why a backend's final response head cannot be relayed, or None when it can.

    Content-Length with Transfer-Encoding, two Content-Length fields, a non-numeric one, a
    Transfer-Encoding other than ``chunked``, or a 101 to a request that asked no upgrade.
    """
    lengths = 0
    codings: list[bytes] = []
    for name, value in headers:
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            lengths += 1
            if not value.strip(b" \t").isdigit():
                return "invalid Content-Length"
        elif size == 17 and name.lower() == b"transfer-encoding":
            codings.append(value)
    if status == 101 and upgrade is None:
        return "101 Switching Protocols to a request that asked no upgrade"
    if lengths > 1:
        return "more than one Content-Length"
    if codings:
        if lengths:
            return "both Content-Length and Transfer-Encoding"
        if len(codings) > 1 or codings[0].strip(b" \t").lower() != b"chunked":
            return "unsupported Transfer-Encoding"
    return None
