"""HTTP/1.1 message heads for the data path: hop-by-hop filtering, X-Forwarded-*, framing.

What to forward is decided in :mod:`proxy.framing`; this module only writes heads.

Pure functions over bytes; the protocols in ``downstream.py`` / ``upstream.py`` call them once per
request and once per response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from .framing import HOP_BY_HOP, STANDARD_TOKENS, RequestHead, connection_tokens

__all__ = [
    "HOP_BY_HOP",
    "IDEMPOTENT_METHODS",
    "LAST_CHUNK",
    "ResponseFraming",
    "build_plain_request_head",
    "build_request_head",
    "build_response_head",
    "chunk",
    "forwarding_lines",
    "reason_phrase",
    "simple_response",
    "upstream_request_head",
]

if TYPE_CHECKING:
    from .config import BackendsConfig
    from .contracts import Downstream

Headers = Sequence[tuple[bytes, bytes]]

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def _only_standard(values: list[bytes]) -> bool:
    """The common ``Connection: keep-alive`` / ``close``: nothing else to strip."""
    return len(values) == 1 and values[0].lower() in STANDARD_TOKENS


def _drop(parts: list[bytes], start: int, names: frozenset[bytes]) -> list[bytes]:
    """Remove ``name: value\r\n`` quadruples (from ``start`` on) whose name is in ``names``."""
    kept = parts[:start]
    for i in range(start, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i : i + 4]
    return kept


def _forwarded_node(ip: str) -> bytes:
    return (f'"[{ip}]"' if ":" in ip else ip).encode("ascii")


def build_request_head(  # noqa: PLR0912  one branch per header class, in the hot path
    head: RequestHead,
    *,
    client_ip: str,
    backend_host: bytes,
    preserve_host: bool,
    trusted: bool = False,
    proto: bytes = b"http",
    forwarded_header: bool = False,
    request_id: bytes | None = None,
) -> bytes:
    """The request head sent to a backend (always HTTP/1.1, keep-alive).

    ``head`` comes from :func:`proxy.framing.check_request`: hop-by-hop headers and those
    named in Connection are already gone. The framing is the proxy's own (Content-Length as
    it counted it, or chunked). Forwarding headers: from a ``trusted`` peer (a proxy in front
    of this one) the incoming X-Forwarded-For / Forwarded are appended to and the incoming
    X-Forwarded-Proto/-Host kept; from anyone else they are replaced by what this proxy saw.
    Host is kept unless ``preserve_host`` is False. ``request_id``: an X-Request-ID to add
    (the client sent none; one it sent is among ``head.headers``).
    """
    out = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    if head.raw_headers is not None:
        out.append(head.raw_headers)
    else:
        for name, value in head.headers:
            out += (name, b": ", value, b"\r\n")
    host = head.host
    send_host = host if (preserve_host and host is not None) else backend_host
    out += (b"Host: ", send_host, b"\r\n")
    xff: list[bytes] = []
    fwd: list[bytes] = []
    xfp = proto
    xfh = host
    if trusted:
        for name, value in head.forwarded:
            low = name.lower()
            if low == b"x-forwarded-for":
                xff.append(value)
            elif low == b"forwarded":
                fwd.append(value)
            elif low == b"x-forwarded-proto":
                xfp = value
            elif low == b"x-forwarded-host":
                xfh = value
            else:
                out += (name, b": ", value, b"\r\n")  # X-Real-IP, X-Forwarded-Port
    xff.append(client_ip.encode("ascii"))
    out += (b"X-Forwarded-For: ", b", ".join(xff), b"\r\nX-Forwarded-Proto: ", xfp, b"\r\n")
    if xfh is not None:
        out += (b"X-Forwarded-Host: ", xfh, b"\r\n")
    if forwarded_header:
        node = b"for=" + _forwarded_node(client_ip) + b";proto=" + proto
        if host is not None:
            node += b';host="' + host + b'"'
        fwd.append(node)
    if fwd:
        out += (b"Forwarded: ", b", ".join(fwd), b"\r\n")
    if request_id is not None:
        out += (b"X-Request-ID: ", request_id, b"\r\n")
    if head.chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif head.content_length is not None:
        out.append(b"Content-Length: %d\r\n" % head.content_length)
    if head.upgrade is not None:
        out += (b"Connection: upgrade\r\nUpgrade: ", head.upgrade, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def forwarding_lines(client_ip: str, proto: bytes = b"http") -> bytes:
    """The X-Forwarded-For and -Proto lines :func:`build_request_head` writes for a client
    whose request carries no forwarding header (computed once per client connection)."""
    return b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\n" % (client_ip.encode("ascii"), proto)


def build_plain_request_head(head: RequestHead, *, forwarding: bytes, request_id: bytes) -> bytes:
    """:func:`build_request_head` for a fast-lane head (``raw_headers`` set: no body, no
    forwarding header, Host present) with Host preserved and no ``Forwarded``: the same bytes,
    in one formatting operation. ``forwarding``: :func:`forwarding_lines` of the client."""
    host = head.host
    assert host is not None and head.raw_headers is not None
    return b"%b %b HTTP/1.1\r\n%bHost: %b\r\n%bX-Forwarded-Host: %b\r\nX-Request-ID: %b\r\n\r\n" % (
        head.method,
        head.target,
        head.raw_headers,
        host,
        forwarding,
        host,
        request_id,
    )


def upstream_request_head(
    request: RequestHead,
    config: BackendsConfig,
    backend_host: bytes,
    client: Downstream,
    request_id: bytes,
) -> bytes:
    """The head to send a backend: a fast-lane request's (``raw_headers`` kept) in one
    formatting operation where the pool needs nothing else, else :func:`build_request_head`.
    (Positional: once per request, on the hot path.)"""
    if request.raw_headers is not None and config.preserve_host and not config.forwarded_header:
        return build_plain_request_head(
            request, forwarding=client.forwarding, request_id=request_id
        )
    return build_request_head(
        request,
        client_ip=client.client_ip,
        backend_host=backend_host,
        preserve_host=config.preserve_host,
        trusted=client.trusted,
        forwarded_header=config.forwarded_header,
        request_id=None if request.request_id is not None else request_id,
        proto=client.proto,
    )


class ResponseFraming:
    """How a response body is framed towards the client."""

    NONE: Final = 0  # no body (HEAD, 1xx, 204, 304)
    LENGTH: Final = 1  # Content-Length passed through, bytes relayed as they come
    CHUNKED: Final = 2  # re-framed as chunked (backend sent chunked or until-close, client is 1.1)
    CLOSE: Final = 3  # until-close (HTTP/1.0 client and unknown length): connection closes after


def build_response_head(  # noqa: PLR0912  one branch per header class, in the hot path
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
        extra = connection_tokens(connection)[0]
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


_PHRASES: dict[int, bytes] = {413: b"Content Too Large"}  # RFC 9110's names, where they moved


def reason_phrase(status: int) -> bytes:
    """The reason phrase of an answer the proxy writes itself (RFC 9110's)."""
    phrase = _PHRASES.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b"Unknown"
        _PHRASES[status] = phrase
    return phrase


def simple_response(
    status: int, message: str, *, keep_alive: bool, head_only: bool = False
) -> bytes:
    """A short plain-text answer generated by the proxy itself (4xx/5xx)."""
    body = (message + "\n").encode("utf-8")
    reason = reason_phrase(status)
    lines: Iterable[bytes] = (
        b"HTTP/1.1 %d %b\r\n" % (status, reason),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: keep-alive\r\n" if keep_alive else b"Connection: close\r\n",
        b"\r\n",
        b"" if head_only else body,
    )
    return b"".join(lines)
