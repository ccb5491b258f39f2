"""HTTP/1.1 message heads for the data path: hop-by-hop filtering, X-Forwarded-*, framing.

Pure functions over bytes; the protocols in ``client.py`` / ``upstream.py`` call them once per
request and once per response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from http import HTTPStatus

__all__ = [
    "HOP_BY_HOP",
    "IDEMPOTENT_METHODS",
    "LAST_CHUNK",
    "ResponseFraming",
    "build_request_head",
    "build_response_head",
    "chunk",
    "simple_response",
]

Headers = Sequence[tuple[bytes, bytes]]

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
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"host"})


_STANDARD_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})


def _named_in_connection(values: list[bytes]) -> frozenset[bytes]:
    """Extra hop-by-hop header names listed in Connection (beyond keep-alive/close/upgrade)."""
    tokens = {t.strip().lower() for value in values for t in value.split(b",")}
    return frozenset(tokens - _STANDARD_TOKENS)


def _only_standard(values: list[bytes]) -> bool:
    """The common ``Connection: keep-alive`` / ``close``: nothing else to strip."""
    return len(values) == 1 and values[0].lower() in _STANDARD_TOKENS


def _drop(parts: list[bytes], start: int, names: frozenset[bytes]) -> list[bytes]:
    """Remove ``name: value\r\n`` quadruples (from ``start`` on) whose name is in ``names``."""
    kept = parts[:start]
    for i in range(start, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i : i + 4]
    return kept


def build_request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    *,
    client_ip: str,
    backend_host: bytes,
    preserve_host: bool,
    chunked: bool,
    upgrade: bytes | None,
) -> bytes:
    """The request head sent to a backend (always HTTP/1.1, keep-alive).

    Drops hop-by-hop headers and those named in Connection; appends the client to
    X-Forwarded-For; sets X-Forwarded-Proto/-Host; keeps Host unless ``preserve_host`` is
    False. ``chunked``: the body is re-framed as chunked (the client sent chunked), so any
    Content-Length is dropped. ``upgrade``: the Upgrade token to pass on (WebSocket).
    """
    xff: list[bytes] = []
    host: bytes | None = None
    connection: list[bytes] | None = None
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == b"connection":
                connection = (connection or []) + [value]
        elif low in _FORWARDED:
            if low == b"host":
                host = value
            elif low == b"x-forwarded-for":
                xff.append(value)
        elif not (chunked and low == b"content-length"):
            out += (name, b": ", value, b"\r\n")
    if connection is not None and not _only_standard(connection):
        extra = _named_in_connection(connection)
        if extra:
            out = _drop(out, 4, extra)
    xff.append(client_ip.encode("ascii"))
    send_host = host if (preserve_host and host is not None) else backend_host
    out += (b"Host: ", send_host, b"\r\nX-Forwarded-For: ", b", ".join(xff))
    out.append(b"\r\nX-Forwarded-Proto: http\r\n")
    if host is not None:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        out += (b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


class ResponseFraming:
    """How a response body is framed towards the client."""

    NONE = 0  # no body (HEAD, 1xx, 204, 304)
    LENGTH = 1  # Content-Length passed through, bytes relayed as they come
    CHUNKED = 2  # re-framed as chunked (backend sent chunked or until-close, client is 1.1)
    CLOSE = 3  # until-close (HTTP/1.0 client and unknown length): connection closes after


def build_response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    *,
    bodyless: bool,
    client_http11: bool,
    keep_alive: bool,
    upgrade: bytes | None = None,
) -> tuple[bytes, int, bool, bool]:
    """The response head for the client, its framing, whether the client connection stays
    open, and whether the backend delimits the body by closing (no length, not chunked).

    Strips hop-by-hop headers; everything else (order, case, repeated Set-Cookie) is kept.
    """
    has_length = False
    has_te = False
    connection: list[bytes] | None = None
    out = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == b"connection":
                connection = (connection or []) + [value]
            elif low == b"transfer-encoding":
                has_te = True
            continue
        if low == b"content-length":
            has_length = True
        out += (name, b": ", value, b"\r\n")
    if connection is not None and not _only_standard(connection):
        extra = _named_in_connection(connection)
        if extra:
            out = _drop(out, 1, extra)
    if upgrade is not None:
        out += (b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\n\r\n")
        return b"".join(out), ResponseFraming.NONE, False, False
    until_close = False
    if bodyless:
        framing = ResponseFraming.NONE
    elif has_length:
        framing = ResponseFraming.LENGTH
    else:
        until_close = not has_te
        if client_http11:
            framing = ResponseFraming.CHUNKED
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            framing = ResponseFraming.CLOSE
            keep_alive = False
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif not client_http11:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out), framing, keep_alive, until_close


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def simple_response(
    status: int, message: str, *, keep_alive: bool, head_only: bool = False
) -> bytes:
    """A short plain-text answer generated by the proxy itself (4xx/5xx)."""
    body = (message + "\n").encode("utf-8")
    reason = HTTPStatus(status).phrase.encode("ascii")
    lines: Iterable[bytes] = (
        b"HTTP/1.1 %d %b\r\n" % (status, reason),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: keep-alive\r\n" if keep_alive else b"Connection: close\r\n",
        b"\r\n",
        b"" if head_only else body,
    )
    return b"".join(lines)
