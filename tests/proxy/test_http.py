"""Message heads: hop-by-hop stripping, X-Forwarded-*, framing."""

from __future__ import annotations

from lbrec.proxy.framing import RequestHead, check_request
from lbrec.proxy.http import (
    ResponseFraming,
    build_request_head,
    build_response_head,
    simple_response,
)


def _request(
    headers: list[tuple[bytes, bytes]],
    method: bytes = b"GET",
    **kw: object,
) -> list[bytes]:
    parsed = check_request(method, b"/p?q=1", "1.1", headers)
    assert isinstance(parsed, RequestHead), parsed
    options: dict[str, object] = {
        "client_ip": "10.0.0.9",
        "backend_host": b"127.0.0.1:9000",
        "preserve_host": True,
    }
    options.update(kw)
    head = build_request_head(parsed, **options)  # type: ignore[arg-type]
    assert head.endswith(b"\r\n\r\n")
    return head.split(b"\r\n")[:-2]


def test_request_hop_by_hop_and_forwarded() -> None:
    headers = [
        (b"Host", b"example.com"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"1"),
        (b"Keep-Alive", b"300"),
        (b"TE", b"trailers"),
        (b"Proxy-Authorization", b"x"),
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"Accept", b"*/*"),
    ]
    lines = _request(headers, trusted=True)
    assert lines[0] == b"GET /p?q=1 HTTP/1.1"
    assert set(lines[1:]) == {
        b"Accept: */*",
        b"Host: example.com",
        b"X-Forwarded-For: 1.1.1.1, 10.0.0.9",
        b"X-Forwarded-Proto: http",
        b"X-Forwarded-Host: example.com",
    }
    untrusted = _request(headers)
    assert b"X-Forwarded-For: 10.0.0.9" in untrusted


def test_request_host_rewrite_chunked_and_upgrade() -> None:
    lines = _request(
        [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")],
        method=b"POST",
        preserve_host=False,
    )
    assert b"Host: 127.0.0.1:9000" in lines
    assert b"Transfer-Encoding: chunked" in lines
    assert not any(line.lower().startswith(b"content-length") for line in lines)
    ws = _request(
        [(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"WebSocket")],
    )
    assert b"Connection: upgrade" in ws and b"Upgrade: websocket" in ws
    h2c = _request([(b"Host", b"h"), (b"Connection", b"Upgrade"), (b"Upgrade", b"h2c")])
    assert not any(line.lower().startswith((b"upgrade", b"connection")) for line in h2c)


def test_response_framing() -> None:
    headers = [
        (b"Content-Length", b"3"),
        (b"Connection", b"close"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Keep-Alive", b"timeout=5"),
    ]
    head, framing, keep, _ = build_response_head(
        200, b"OK", headers, bodyless=False, client_http11=True, keep_alive=True
    )
    assert framing == ResponseFraming.LENGTH and keep
    assert (
        head
        == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
    )
    _, framing, keep, until_close = build_response_head(
        200, b"OK", [], bodyless=False, client_http11=True, keep_alive=True
    )
    assert framing == ResponseFraming.CHUNKED and keep and until_close
    head, framing, keep, _ = build_response_head(
        200, b"OK", [], bodyless=False, client_http11=False, keep_alive=True
    )
    assert framing == ResponseFraming.CLOSE and not keep and b"Connection: close" in head
    _, framing, _, _ = build_response_head(
        304, b"Not Modified", [], bodyless=True, client_http11=True, keep_alive=True
    )
    assert framing == ResponseFraming.NONE


def test_simple_response() -> None:
    raw = simple_response(503, "no healthy backend available", keep_alive=False)
    assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert raw.endswith(b"\r\n\r\nno healthy backend available\n")


def test_connection_named_headers_dropped_both_ways() -> None:
    head, _, _, until_close = build_response_head(
        200,
        b"OK",
        [
            (b"Connection", b"X-A, close"),
            (b"X-A", b"1"),
            (b"X-B", b"2"),
            (b"Transfer-Encoding", b"chunked"),
        ],
        bodyless=False,
        client_http11=True,
        keep_alive=True,
    )
    assert b"X-A" not in head and b"X-B: 2\r\n" in head and not until_close
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    lines = _request([(b"Connection", b"x-a"), (b"X-A", b"1"), (b"Host", b"h")])
    assert not any(line.startswith(b"X-A") for line in lines)
