"""The smuggling and framing corpus, written for lbrec from the classes in the public corpora.

Sources read (none copied): aws/http-desync-guardian's request cases (CL/TE obfuscations and
their severity classes), the HTTP Garden's payload classes (llhttp/h11 discrepancies: bare CR/LF,
chunk extensions, obs-fold, NUL, version and target forms), MDA2AV/Http11Probe's RFC 9112
compliance checks, and defparam/smuggler's Transfer-Encoding mutations.

Each request case is a raw byte string and the verdict lbrec gives it:

* ``reject(S...)``: answered with one of the statuses (or, for an error inside a body already
  streaming, just closed); nothing of it completes at the backend.
* ``forward(n)``: exactly ``n`` requests reach the backend, each answered once, in order.
* ``either``: the RFC allows both; only the universal invariants of the oracle apply.

``CLASS`` groups cases for the side-by-side table in docs/proxy-conformance.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tests.proxy.desync.harness import Seen

__all__ = ["REQUEST_CASES", "RESPONSE_CASES", "RequestCase", "ResponseCase"]

Check = Callable[[list[Seen]], None]


@dataclass(frozen=True)
class RequestCase:
    name: str
    klass: str
    raw: bytes
    verdict: str  # "reject", "forward", "either"
    statuses: tuple[int, ...] = ()
    count: int = 0
    check: Check | None = None
    closes: bool = True  # a rejected case always closes; forward cases say


@dataclass(frozen=True)
class ResponseCase:
    name: str
    klass: str
    answer: bytes
    status: int  # what the client must get
    body: bytes | None = None
    reuse_allowed: bool = False
    method: bytes = b"GET"
    close_after: bool = False
    headers_absent: tuple[bytes, ...] = field(default=())


def req(*lines: str | bytes, body: bytes = b"") -> bytes:
    parts = [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    return b"\r\n".join(parts) + b"\r\n\r\n" + body


H = "Host: example.com"
CASES: list[RequestCase] = []


def reject(name: str, klass: str, raw: bytes, *statuses: int) -> None:
    CASES.append(RequestCase(name, klass, raw, "reject", statuses or (400,)))


def forward(name: str, klass: str, raw: bytes, count: int = 1, check: Check | None = None) -> None:
    CASES.append(RequestCase(name, klass, raw, "forward", count=count, check=check))


def either(name: str, klass: str, raw: bytes) -> None:
    CASES.append(RequestCase(name, klass, raw, "either"))


def body_is(expected: bytes) -> Check:
    def check(seen: list[Seen]) -> None:
        assert seen[0].body == expected, seen[0].body

    return check


def no_header(*names: bytes) -> Check:
    def check(seen: list[Seen]) -> None:
        for request in seen:
            for name in names:
                assert not request.header(name), (name, request.headers)

    return check


def header_is(name: bytes, value: bytes) -> Check:
    def check(seen: list[Seen]) -> None:
        assert seen[0].header(name) == [value], seen[0].headers

    return check


def targets(*expected: bytes) -> Check:
    def check(seen: list[Seen]) -> None:
        assert [r.target for r in seen] == list(expected)

    return check


def all_of(*checks: Check) -> Check:
    def check(seen: list[Seen]) -> None:
        for one in checks:
            one(seen)

    return check


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"

# -- Content-Length ----------------------------------------------------------------------------
K = "content-length"
reject(
    "cl-and-te",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Content-Length: 4",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n" + SMUGGLED,
    ),
)
reject(
    "te-and-cl",
    K,
    req(
        "POST / HTTP/1.1", H, "Transfer-Encoding: chunked", "Content-Length: 6", body=b"0\r\n\r\nG"
    ),
)
reject(
    "cl-duplicate-different",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 3", "Content-Length: 48", body=b"abc" + SMUGGLED),
)
reject(
    "cl-duplicate-same",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 3", "Content-Length: 3", body=b"abc"),
)
reject("cl-list", K, req("POST / HTTP/1.1", H, "Content-Length: 3, 3", body=b"abc"))
reject("cl-plus-sign", K, req("POST / HTTP/1.1", H, "Content-Length: +3", body=b"abc"))
reject("cl-negative", K, req("POST / HTTP/1.1", H, "Content-Length: -1", body=b"abc"))
reject("cl-inner-space", K, req("POST / HTTP/1.1", H, "Content-Length: 1 2", body=b"abc"))
reject("cl-hex", K, req("POST / HTTP/1.1", H, "Content-Length: 0x3", body=b"abc"))
reject(
    "cl-overflow",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 184467440737095516170", body=b"abc"),
)
reject("cl-empty", K, req("POST / HTTP/1.1", H, "Content-Length: ", body=b"abc"))
reject("cl-letters", K, req("POST / HTTP/1.1", H, "Content-Length: 3a", body=b"abc"))
reject("cl-decimal", K, req("POST / HTTP/1.1", H, "Content-Length: 3.0", body=b"abc"))
forward(
    "cl-leading-zeros",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 003", body=b"abc"),
    check=all_of(body_is(b"abc"), header_is(b"content-length", b"3")),
)
forward(
    "cl-trailing-space",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 3 ", body=b"abc"),
    check=body_is(b"abc"),
)
forward(
    "cl-underscore-ignored",
    K,
    req("POST / HTTP/1.1", H, "Content_Length: 40", "Content-Length: 3", body=b"abc"),
    check=no_header(b"content_length"),
)
forward(
    "cl-underscore-alone",
    K,
    req("GET / HTTP/1.1", H, "Content_Length: 5"),
    check=no_header(b"content_length", b"content-length"),
)
forward(
    "cl-zero-then-request",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 0") + req("GET /second HTTP/1.1", H),
    2,
    check=targets(b"/", b"/second"),
)
forward(
    "cl-get-with-body",
    K,
    req("GET / HTTP/1.1", H, f"Content-Length: {len(SMUGGLED)}", body=SMUGGLED),
    check=body_is(SMUGGLED),
)
forward(
    "cl-body-holds-a-request",
    K,
    req("POST /a HTTP/1.1", H, f"Content-Length: {len(SMUGGLED)}", body=SMUGGLED)
    + req("GET /b HTTP/1.1", H),
    2,
    check=targets(b"/a", b"/b"),
)

# -- Transfer-Encoding -------------------------------------------------------------------------
K = "transfer-encoding"
CHUNKED_BODY = b"3\r\nabc\r\n0\r\n\r\n"
forward(
    "te-chunked",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=CHUNKED_BODY),
    check=body_is(b"abc"),
)
forward(
    "te-uppercase",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: CHUNKED", body=CHUNKED_BODY),
    check=body_is(b"abc"),
)
forward(
    "te-mixed-case-name",
    K,
    req("POST / HTTP/1.1", H, "TrAnSfEr-EnCoDiNg: chunked", body=CHUNKED_BODY),
    check=body_is(b"abc"),
)
reject(
    "te-space-before-colon",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding : chunked", body=CHUNKED_BODY),
)
reject(
    "te-tab-before-colon",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding\t: chunked", body=CHUNKED_BODY),
)
reject(
    "te-vertical-tab",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding:\x0bchunked", body=CHUNKED_BODY),
)
reject(
    "te-form-feed", K, req("POST / HTTP/1.1", H, "Transfer-Encoding:\x0cchunked", body=CHUNKED_BODY)
)
reject(
    "te-trailing-tab",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked\t", body=CHUNKED_BODY),
    400,
    501,
)
either(
    "te-leading-tab", K, req("POST / HTTP/1.1", H, "Transfer-Encoding:\tchunked", body=CHUNKED_BODY)
)
reject(
    "te-duplicate",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked",
        body=CHUNKED_BODY,
    ),
    400,
    501,
)
reject(
    "te-duplicate-identity",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: identity",
        body=CHUNKED_BODY,
    ),
    400,
    501,
)
reject(
    "te-chunked-identity",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked, identity", body=CHUNKED_BODY),
    400,
    501,
)
reject(
    "te-identity-chunked",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: identity, chunked", body=CHUNKED_BODY),
    400,
    501,
)
reject(
    "te-gzip-chunked",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: gzip, chunked", body=CHUNKED_BODY),
    501,
)
reject(
    "te-identity-with-cl",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: identity", "Content-Length: 3", body=b"abc"),
    400,
    501,
)
reject(
    "te-xchunked",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: xchunked", body=CHUNKED_BODY),
    400,
    501,
)
reject(
    "te-chunked-comma",
    K,
    req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked,", body=CHUNKED_BODY),
    400,
    501,
)
reject(
    "te-quoted",
    K,
    req("POST / HTTP/1.1", H, 'Transfer-Encoding: "chunked"', body=CHUNKED_BODY),
    400,
    501,
)
reject("te-nul", K, req("POST / HTTP/1.1", H, "Transfer-Encoding: chunked\x00", body=CHUNKED_BODY))
reject(
    "te-obs-fold", K, req("POST / HTTP/1.1", H, "Transfer-Encoding:", " chunked", body=CHUNKED_BODY)
)
reject("te-empty", K, req("POST / HTTP/1.1", H, "Transfer-Encoding: ", body=CHUNKED_BODY), 400, 501)
reject("te-http10", K, req("POST / HTTP/1.0", "Transfer-Encoding: chunked", body=CHUNKED_BODY))
reject(
    "te-http10-keepalive",
    K,
    req(
        "POST / HTTP/1.0",
        "Connection: keep-alive",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n" + SMUGGLED,
    ),
)
forward(
    "te-underscore-ignored",
    K,
    req("POST / HTTP/1.1", H, "Transfer_Encoding: chunked", "Content-Length: 3", body=b"abc"),
    check=all_of(body_is(b"abc"), no_header(b"transfer_encoding", b"transfer-encoding")),
)
forward(
    "te-get-chunked", K, req("GET / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0\r\n\r\n")
)

# -- chunked body ------------------------------------------------------------------------------
K = "chunked-body"
TE = "Transfer-Encoding: chunked"
reject(
    "chunk-size-overflow",
    K,
    req("POST / HTTP/1.1", H, TE, body=b"FFFFFFFFFFFFFFFFF1\r\na\r\n0\r\n\r\n"),
)
reject("chunk-size-negative", K, req("POST / HTTP/1.1", H, TE, body=b"-1\r\na\r\n0\r\n\r\n"))
reject("chunk-size-0x", K, req("POST / HTTP/1.1", H, TE, body=b"0x1\r\na\r\n0\r\n\r\n"))
reject("chunk-size-plus", K, req("POST / HTTP/1.1", H, TE, body=b"+1\r\na\r\n0\r\n\r\n"))
either("chunk-size-trailing-space", K, req("POST / HTTP/1.1", H, TE, body=b"1 \r\na\r\n0\r\n\r\n"))
reject("chunk-size-bare-lf", K, req("POST / HTTP/1.1", H, TE, body=b"1\na\r\n0\r\n\r\n"))
reject("chunk-data-bare-lf", K, req("POST / HTTP/1.1", H, TE, body=b"1\r\na\n0\r\n\r\n"))
reject("chunk-data-too-long", K, req("POST / HTTP/1.1", H, TE, body=b"1\r\nabc\r\n0\r\n\r\n"))
reject("chunk-data-no-crlf", K, req("POST / HTTP/1.1", H, TE, body=b"1\r\naXX0\r\n\r\n"))
reject("chunk-ext-bare-lf", K, req("POST / HTTP/1.1", H, TE, body=b"1;a\na\r\n0\r\n\r\n"))
reject("chunk-ext-nul", K, req("POST / HTTP/1.1", H, TE, body=b"1;a\x00\r\na\r\n0\r\n\r\n"))
reject("chunk-ext-bare-cr", K, req("POST / HTTP/1.1", H, TE, body=b"1;a\rb\r\na\r\n0\r\n\r\n"))
forward(
    "chunk-ext-valid",
    K,
    req("POST / HTTP/1.1", H, TE, body=b'1;name=value\r\na\r\n0;x="q"\r\n\r\n'),
    check=body_is(b"a"),
)
forward(
    "chunk-size-uppercase-hex",
    K,
    req("POST / HTTP/1.1", H, TE, body=b"A\r\n0123456789\r\n0\r\n\r\n"),
    check=body_is(b"0123456789"),
)
forward(
    "chunk-size-leading-zeros",
    K,
    req("POST / HTTP/1.1", H, TE, body=b"0001\r\na\r\n0\r\n\r\n"),
    check=body_is(b"a"),
)
forward(
    "chunk-then-pipelined",
    K,
    req("POST / HTTP/1.1", H, TE, body=b"0\r\n\r\n") + req("GET /second HTTP/1.1", H),
    2,
    check=targets(b"/", b"/second"),
)

# -- trailers ----------------------------------------------------------------------------------
K = "trailers"
TRAILER = b"1\r\na\r\n0\r\n%b\r\n\r\n"
forward(
    "trailer-authorization",
    K,
    req("POST / HTTP/1.1", H, TE, body=TRAILER % b"Authorization: Bearer stolen"),
    check=no_header(b"authorization"),
)
reject(
    "trailer-content-length", K, req("POST / HTTP/1.1", H, TE, body=TRAILER % b"Content-Length: 50")
)
reject(
    "trailer-transfer-encoding",
    K,
    req("POST / HTTP/1.1", H, TE, body=TRAILER % b"Transfer-Encoding: chunked"),
)
forward(
    "trailer-host",
    K,
    req("POST / HTTP/1.1", H, TE, body=TRAILER % b"Host: evil.example"),
    check=header_is(b"host", b"example.com"),
)
forward(
    "trailer-then-request",
    K,
    req("POST / HTTP/1.1", H, TE, body=TRAILER % b"X-Trailer: 1") + req("GET /second HTTP/1.1", H),
    2,
    check=all_of(targets(b"/", b"/second"), no_header(b"x-trailer")),
)
reject(
    "trailer-huge",
    K,
    req("POST / HTTP/1.1", H, TE, body=b"1\r\na\r\n0\r\nX-Big: " + b"x" * 300_000 + b"\r\n\r\n"),
    400,
    431,
)
reject("trailer-bare-lf", K, req("POST / HTTP/1.1", H, TE, body=b"1\r\na\r\n0\r\nX: 1\n\r\n"))

# -- line endings and field syntax -------------------------------------------------------------
K = "syntax"
reject("bare-lf-request-line", K, b"GET / HTTP/1.1\nHost: example.com\r\n\r\n")
reject("bare-lf-headers", K, b"GET / HTTP/1.1\r\nHost: example.com\nX: 1\r\n\r\n")
reject("bare-lf-everywhere", K, b"GET / HTTP/1.1\nHost: example.com\n\n")
reject("bare-cr-request-line", K, b"GET / HTTP/1.1\rHost: example.com\r\n\r\n")
reject("bare-cr-in-value", K, req("GET / HTTP/1.1", H, "X: a\rb"))
reject("obs-fold", K, req("GET / HTTP/1.1", H, "X: a", " b"))
reject("obs-fold-tab", K, req("GET / HTTP/1.1", H, "X: a", "\tb"))
reject("space-before-colon", K, req("GET / HTTP/1.1", "Host : example.com"))
reject("space-before-first-header", K, req("GET / HTTP/1.1", " Host: example.com"))
reject("nul-in-value", K, req("GET / HTTP/1.1", H, "X: a\x00b"))
reject("ctl-in-value", K, req("GET / HTTP/1.1", H, "X: a\x01b"))
reject("del-in-value", K, req("GET / HTTP/1.1", H, "X: a\x7fb"))
reject("nul-in-name", K, req("GET / HTTP/1.1", H, "X\x00Y: 1"))
reject("space-in-name", K, req("GET / HTTP/1.1", H, "X Y: 1"))
reject("empty-name", K, req("GET / HTTP/1.1", H, ": 1"))
reject("no-colon", K, req("GET / HTTP/1.1", H, "NoColon"))
reject("lf-in-target", K, b"GET /a\nb HTTP/1.1\r\nHost: example.com\r\n\r\n")
reject("space-in-target", K, req("GET /a b HTTP/1.1", H))
reject("nul-in-target", K, req("GET /a\x00 HTTP/1.1", H))
reject("header-too-large", K, req("GET / HTTP/1.1", H, "X-Big: " + "x" * 70_000), 400, 431)
reject(
    "too-many-header-bytes",
    K,
    req("GET / HTTP/1.1", H, *[f"X-{i}: {'y' * 1000}" for i in range(80)]),
    400,
    431,
)
# The request target alone over max_header_bytes: 414 (RFC 9112 3, nginx), not 431; more
# than MAX_HEADER_FIELDS (100) fields: 431, and 100 pass (also through the fast lane).
reject("target-too-long", K, req("GET /" + "a" * 70_000 + " HTTP/1.1", H), 414)
reject("target-too-long-unfinished", K, b"GET /" + b"a" * 200_000, 414)
reject(
    "too-many-header-fields", K, req("GET / HTTP/1.1", H, *[f"X-{i}: 1" for i in range(100)]), 431
)
reject(
    "too-many-header-fields-post",
    K,
    req("POST / HTTP/1.1", H, "Content-Length: 0", *[f"X-{i}: 1" for i in range(99)]),
    431,
)
forward("hundred-header-fields", K, req("GET / HTTP/1.1", H, *[f"X-{i}: 1" for i in range(99)]))
forward("obs-text-in-value", K, req("GET / HTTP/1.1", H, b"X-Latin: caf\xe9"))
forward(
    "underscore-forwarding-header",
    K,
    req("GET / HTTP/1.1", H, "X_Forwarded_For: 1.2.3.4"),
    check=no_header(b"x_forwarded_for"),
)

# -- version and method ------------------------------------------------------------------------
K = "version-method"
reject("http09", K, b"GET /\r\n\r\n")
reject("http20-text", K, req("GET / HTTP/2.0", H), 400, 505)
reject("http12", K, req("GET / HTTP/1.2", H), 400, 505)
reject("http-lowercase", K, req("GET / http/1.1", H))
reject("http-version-spaces", K, req("GET / HTTP/ 1.1", H))
reject("connect", K, req("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"), 400, 405)
reject("trace", K, req("TRACE / HTTP/1.1", H), 405)
reject("method-lowercase", K, req("get / HTTP/1.1", H), 400, 405, 501)
either("method-unknown", K, req("FOO / HTTP/1.1", H))
forward("http10-no-host", K, req("GET / HTTP/1.0"))
forward(
    "http10-keepalive",
    K,
    req("GET /1 HTTP/1.0", "Connection: keep-alive")
    + req("GET /2 HTTP/1.0", "Connection: keep-alive"),
    2,
    check=targets(b"/1", b"/2"),
)
forward(
    "http10-closes", K, req("GET /1 HTTP/1.0") + req("GET /2 HTTP/1.0"), 1, check=targets(b"/1")
)

# -- Host and target forms ---------------------------------------------------------------------
K = "host-target"
reject("host-missing", K, req("GET / HTTP/1.1"))
reject("host-two-different", K, req("GET / HTTP/1.1", H, "Host: evil.example"))
reject("host-two-same", K, req("GET / HTTP/1.1", H, H))
reject("host-userinfo", K, req("GET / HTTP/1.1", "Host: user@example.com"))
reject("host-empty", K, req("GET / HTTP/1.1", "Host: "))
reject("host-with-path", K, req("GET / HTTP/1.1", "Host: example.com/x"))
reject("host-with-space", K, req("GET / HTTP/1.1", "Host: example .com"))
reject("host-bad-port", K, req("GET / HTTP/1.1", "Host: example.com:x"))
reject("host-backslash", K, req("GET / HTTP/1.1", "Host: example.com\\evil"))
forward(
    "host-ipv6",
    K,
    req("GET / HTTP/1.1", "Host: [::1]:8080"),
    check=header_is(b"host", b"[::1]:8080"),
)
forward(
    "host-port",
    K,
    req("GET / HTTP/1.1", "Host: example.com:8080"),
    check=header_is(b"host", b"example.com:8080"),
)
forward(
    "absolute-form-same-host",
    K,
    req("GET http://example.com/x?y=1 HTTP/1.1", H),
    check=all_of(targets(b"/x?y=1"), header_is(b"host", b"example.com")),
)
forward("absolute-form-no-path", K, req("GET http://example.com HTTP/1.1", H), check=targets(b"/"))
reject("absolute-form-other-host", K, req("GET http://evil.example/x HTTP/1.1", H))
reject("absolute-form-userinfo", K, req("GET http://u:p@example.com/x HTTP/1.1", H))
reject("absolute-form-ftp", K, req("GET ftp://example.com/x HTTP/1.1", H))
reject("authority-form-get", K, req("GET example.com:80 HTTP/1.1", H))
reject("asterisk-form-get", K, req("GET * HTTP/1.1", H))
forward("asterisk-form-options", K, req("OPTIONS * HTTP/1.1", H), check=targets(b"*"))
reject("relative-target", K, req("GET x/y HTTP/1.1", H))

# -- hop-by-hop abuse --------------------------------------------------------------------------
K = "hop-by-hop"
forward(
    "connection-content-length",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Connection: Content-Length",
        f"Content-Length: {len(SMUGGLED)}",
        body=SMUGGLED,
    ),
    check=body_is(SMUGGLED),
)
forward(
    "connection-content-length-keepalive",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Connection: keep-alive, Content-Length",
        f"Content-Length: {len(SMUGGLED)}",
        body=SMUGGLED,
    )
    + req("GET /next HTTP/1.1", H),
    2,
    check=targets(b"/", b"/next"),
)
forward(
    "connection-transfer-encoding",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Connection: Transfer-Encoding",
        TE,
        body=b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
    ),
    check=body_is(SMUGGLED),
)
forward(
    "connection-host",
    K,
    req("GET / HTTP/1.1", H, "Connection: Host"),
    check=header_is(b"host", b"example.com"),
)
forward(
    "connection-x-forwarded-for",
    K,
    req("GET / HTTP/1.1", H, "Connection: X-Forwarded-For"),
    check=header_is(b"x-forwarded-for", b"127.0.0.1"),
)
forward(
    "connection-custom",
    K,
    req("GET / HTTP/1.1", H, "Connection: keep-alive, X-Private", "X-Private: 1"),
    check=no_header(b"x-private"),
)
forward(
    "proxy-connection",
    K,
    req("GET / HTTP/1.1", H, "Proxy-Connection: keep-alive"),
    check=no_header(b"proxy-connection"),
)
forward(
    "xff-spoof-replaced",
    K,
    req("GET / HTTP/1.1", H, "X-Forwarded-For: 10.9.9.9"),
    check=header_is(b"x-forwarded-for", b"127.0.0.1"),
)
forward(
    "forwarded-spoof-dropped",
    K,
    req("GET / HTTP/1.1", H, "Forwarded: for=10.9.9.9", "X-Real-IP: 10.9.9.9"),
    check=no_header(b"forwarded", b"x-real-ip"),
)
forward(
    "upgrade-h2c-ignored",
    K,
    req(
        "GET / HTTP/1.1",
        H,
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAAQAAP__",
    )
    + req("GET /next HTTP/1.1", H),
    2,
    check=all_of(targets(b"/", b"/next"), no_header(b"upgrade", b"http2-settings")),
)
reject(
    "upgrade-via-proxy-connection-with-body",
    K,
    req(
        "POST /inbox HTTP/1.1",
        H,
        "Upgrade: foo",
        "Proxy-Connection: upgrade",
        "Content-Length: 120",
    ),
)
reject(
    "upgrade-with-body",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Content-Length: 3",
        body=b"abc",
    ),
)
reject(
    "upgrade-with-chunked-body",
    K,
    req(
        "POST / HTTP/1.1",
        H,
        "Connection: Upgrade",
        "Upgrade: h2c",
        TE,
        body=b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
    ),
)
forward(
    "upgrade-websocket-post-ignored",
    K,
    req("POST / HTTP/1.1", H, "Upgrade: websocket", "Content-Length: 3", body=b"abc"),
    check=all_of(body_is(b"abc"), no_header(b"upgrade")),
)

# -- expectations and pipelining ---------------------------------------------------------------
K = "expect-pipeline"
forward(
    "expect-100-continue",
    K,
    req("POST / HTTP/1.1", H, "Expect: 100-continue", "Content-Length: 3", body=b"abc"),
    check=body_is(b"abc"),
)
forward("expect-unknown", K, req("GET / HTTP/1.1", H, "Expect: something"))
forward(
    "pipelined-three",
    K,
    req("GET /1 HTTP/1.1", H) + req("GET /2 HTTP/1.1", H) + req("GET /3 HTTP/1.1", H),
    3,
    check=targets(b"/1", b"/2", b"/3"),
)
forward(
    "pipelined-post-get",
    K,
    req("POST /1 HTTP/1.1", H, "Content-Length: 3", body=b"abc") + req("GET /2 HTTP/1.1", H),
    2,
    check=targets(b"/1", b"/2"),
)
either("pipelined-deep", K, b"".join(req(f"GET /{i} HTTP/1.1", H) for i in range(200)))
forward(
    "pipelined-then-garbage",
    K,
    req("GET /1 HTTP/1.1", H) + b"GARBAGE\r\n\r\n",
    check=targets(b"/1"),
)

REQUEST_CASES = CASES


# -- response side -----------------------------------------------------------------------------
def resp(*lines: str, body: bytes = b"") -> bytes:
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


R = "response"
POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"
RESPONSE_CASES = [
    ResponseCase(
        "ok-content-length",
        R,
        resp("HTTP/1.1 200 OK", "Content-Length: 2", body=b"ok"),
        200,
        b"ok",
        reuse_allowed=True,
    ),
    ResponseCase(
        "ok-chunked-with-trailer",
        R,
        resp(
            "HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
        ),
        200,
        b"ok",
        reuse_allowed=True,
    ),
    ResponseCase(
        "cl-and-te",
        R,
        resp(
            "HTTP/1.1 200 OK",
            "Content-Length: 2",
            "Transfer-Encoding: chunked",
            body=b"2\r\nok\r\n0\r\n\r\n",
        ),
        502,
    ),
    ResponseCase(
        "two-content-lengths",
        R,
        resp("HTTP/1.1 200 OK", "Content-Length: 2", "Content-Length: 10", body=b"ok"),
        502,
    ),
    ResponseCase(
        "two-same-content-lengths",
        R,
        resp("HTTP/1.1 200 OK", "Content-Length: 2", "Content-Length: 2", body=b"ok"),
        502,
    ),
    ResponseCase(
        "content-length-sign", R, resp("HTTP/1.1 200 OK", "Content-Length: +2", body=b"ok"), 502
    ),
    ResponseCase("te-gzip", R, resp("HTTP/1.1 200 OK", "Transfer-Encoding: gzip", body=b"ok"), 502),
    ResponseCase(
        "te-chunked-gzip",
        R,
        resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked, gzip", body=b"ok"),
        502,
    ),
    ResponseCase(
        "bad-chunk",
        R,
        resp("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"zz\r\nok\r\n0\r\n\r\n"),
        502,
    ),
    ResponseCase(
        "bytes-after-body",
        R,
        resp("HTTP/1.1 200 OK", "Content-Length: 2", body=b"okEXTRA"),
        200,
        b"ok",
    ),
    ResponseCase(
        "response-after-body",
        R,
        resp("HTTP/1.1 200 OK", "Content-Length: 2", body=b"ok" + POISON),
        200,
        b"ok",
    ),
    ResponseCase("body-on-204", R, resp("HTTP/1.1 204 No Content", body=POISON), 204, b""),
    ResponseCase(
        "body-on-304",
        R,
        resp("HTTP/1.1 304 Not Modified", "Content-Length: 8", body=b"poisoned"),
        304,
        b"",
    ),
    ResponseCase(
        "body-on-head",
        R,
        resp("HTTP/1.1 200 OK", "Content-Length: 8", body=b"poisoned"),
        200,
        b"",
        method=b"HEAD",
    ),
    ResponseCase(
        "interim-100-then-200",
        R,
        resp("HTTP/1.1 100 Continue") + resp("HTTP/1.1 200 OK", "Content-Length: 2", body=b"ok"),
        200,
        b"ok",
        reuse_allowed=True,
    ),
    ResponseCase(
        "interim-103-then-200",
        R,
        resp("HTTP/1.1 103 Early Hints", "Link: </a>")
        + resp("HTTP/1.1 200 OK", "Content-Length: 2", body=b"ok"),
        200,
        b"ok",
        reuse_allowed=True,
    ),
    ResponseCase(
        "switching-protocols-unasked",
        R,
        resp(
            "HTTP/1.1 101 Switching Protocols",
            "Connection: Upgrade",
            "Upgrade: websocket",
            body=POISON,
        ),
        502,
    ),
    ResponseCase(
        "no-length-kept-open",
        R,
        resp("HTTP/1.1 200 OK", "Connection: keep-alive", body=b"until-close"),
        200,
        b"until-close",
        close_after=True,
    ),
    ResponseCase(
        "connection-content-length",
        R,
        resp("HTTP/1.1 200 OK", "Connection: Content-Length", "Content-Length: 2", body=b"ok"),
        200,
        b"ok",
        reuse_allowed=True,
    ),
    ResponseCase(
        "connection-transfer-encoding",
        R,
        resp(
            "HTTP/1.1 200 OK",
            "Connection: Transfer-Encoding",
            "Transfer-Encoding: chunked",
            body=b"2\r\nok\r\n0\r\n\r\n",
        ),
        200,
        b"ok",
        reuse_allowed=True,
    ),
    ResponseCase(
        "header-too-large",
        R,
        resp("HTTP/1.1 200 OK", "X-Big: " + "x" * 100_000, "Content-Length: 2", body=b"ok"),
        502,
    ),
    ResponseCase("status-line-garbage", R, b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok", 502),
    ResponseCase("http09-response", R, b"just a body\r\n", 502, close_after=True),
    ResponseCase("bare-lf-response", R, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 502),
    ResponseCase(
        "obs-fold-response",
        R,
        resp("HTTP/1.1 200 OK", "X: a", " b", "Content-Length: 2", body=b"ok"),
        502,
    ),
    ResponseCase(
        "nul-in-response-header",
        R,
        resp("HTTP/1.1 200 OK", "X: a\x00b", "Content-Length: 2", body=b"ok"),
        502,
    ),
]
