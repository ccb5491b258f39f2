"""The fast lane is a strict subset of the general path: whatever it takes, llhttp and the
general path would have taken too, with the same bytes sent on (proxy/fastlane.py).

The reference below is the general path itself: httptools (llhttp, as the proxy runs it),
then :func:`check_request` / :func:`check_response` and the head builders of proxy/http.py.
The inputs: the smuggling corpus (tests/proxy/desync/cases.py), heads generated from a grammar
that mixes plain and special headers, casing and whitespace, and byte mutations of both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lbrec.proxy.config import LimitSettings
from lbrec.proxy.fastlane import (
    PLAIN_ANSWER,
    PLAIN_REQUEST,
    relayed_answer_head,
    take_answer,
    take_request,
)
from lbrec.proxy.framing import Rejection, RequestHead, check_request, check_response
from lbrec.proxy.http import (
    ResponseFraming,
    build_plain_request_head,
    build_request_head,
    build_response_head,
    forwarding_lines,
)
from tests.proxy.desync.cases import REQUEST_CASES, RESPONSE_CASES
from tests.support.examples import examples

_LIMIT = LimitSettings().max_header_bytes  # the default; the lane is tried only below it

# -- the reference: llhttp and the general path ---------------------------------------------


@dataclass
class _Parsed:
    url: bytes = b""
    status: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    head_done: bool = False
    body: bytes = b""
    messages: int = 0
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
    keep_alive: bool = True  # as the proxy reads it: in the callbacks (after, llhttp resets)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.messages += 1
        assert self.parser is not None
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()


def _general_request(data: bytes) -> tuple[RequestHead, bool] | str:
    """What the general path makes of one read: the head and keep-alive, or why not."""
    parsed = _Parsed()
    parser = parsed.parser = httptools.HttpRequestParser(parsed)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return "upgrade"
    except httptools.HttpParserError as err:
        return f"llhttp: {err}"
    if parsed.messages != 1 or parsed.body:
        return f"{parsed.messages} messages, body {parsed.body!r}"
    head = check_request(parser.get_method(), parsed.url, parser.get_http_version(), parsed.headers)
    if isinstance(head, Rejection):
        return f"rejected: {head}"
    if parser.should_upgrade():
        return "should upgrade"
    return head, parsed.keep_alive


def _sent_on(head: RequestHead) -> bytes:
    return build_request_head(
        head,
        client_ip="192.0.2.7",
        backend_host=b"127.0.0.1:9000",
        preserve_host=True,
        request_id=b"req-1",
    )


def _assert_request_agrees(data: bytes) -> bool:
    """Whether the lane took ``data``; when it did, the general path agrees byte for byte.
    (The client connection tries the lane on reads up to ``max_header_bytes`` only.)"""
    fast = take_request(data) if len(data) <= _LIMIT else None
    if fast is None:
        return False
    general = _general_request(data)
    assert not isinstance(general, str), f"the lane took what the general path refuses: {general}"
    head, keep_alive = general
    assert keep_alive
    assert fast.headers == head.headers
    assert replace(fast, raw_headers=None, header_fields=head.header_fields) == head
    assert _sent_on(fast) == _sent_on(head)
    for ip, trusted in (("192.0.2.7", False), ("2001:db8::1", True)):
        general_bytes = build_request_head(
            head,
            client_ip=ip,
            backend_host=b"127.0.0.1:9000",
            preserve_host=True,
            trusted=trusted,
            request_id=b"req-2",
        )
        plain = build_plain_request_head(fast, forwarding=forwarding_lines(ip), request_id=b"req-2")
        assert plain == general_bytes
    return True


def _general_answer(data: bytes, *, keep_alive: bool) -> tuple[bytes, bytes] | str:
    """The general path's relay of a complete answer: (head sent on, body), or why not."""
    parsed = _Parsed()
    parser = parsed.parser = httptools.HttpResponseParser(parsed)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as err:
        return f"llhttp: {err}"
    if parsed.messages != 1:
        return f"{parsed.messages} messages"
    status = parser.get_status_code()
    reason = check_response(status, parsed.headers, upgrade=None)
    if reason is not None:
        return f"refused: {reason}"
    head, framing, kept, until_close = build_response_head(
        status,
        parsed.status,
        parsed.headers,
        bodyless=False,
        client_http11=True,
        keep_alive=keep_alive,
    )
    if framing != ResponseFraming.LENGTH or until_close or kept != keep_alive:
        return f"framing {framing}, until close {until_close}"
    if not parsed.keep_alive:
        return "backend connection not reusable"
    return head, parsed.body


_GET = take_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
_HEAD = take_request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")


def _assert_answer_agrees(data: bytes) -> bool:
    """Whether the lane took the answer at the start of ``data`` (:func:`take_answer`); if so,
    the general path relays the same head and body, and reuses the backend connection as the
    lane does."""
    assert _GET is not None and _HEAD is not None
    assert take_answer(data, _HEAD, keep_alive=True, max_header_bytes=_LIMIT) is None
    taken = [
        take_answer(data, _GET, keep_alive=keep_alive, max_header_bytes=_LIMIT)
        for keep_alive in (True, False)
    ]
    if taken[0] is None:
        assert taken[1] is None
        return False
    match = PLAIN_ANSWER.match(data)
    assert match is not None
    end = match.end()
    length = int(match.group(3))
    complete = data[: end + length]
    whole = len(complete) == end + length
    for keep_alive, plain in zip((True, False), taken, strict=True):
        assert plain is not None
        # a partial body: the head alone must agree
        general = _general_answer(
            complete if whole else data[:end] + b"x" * length, keep_alive=keep_alive
        )
        assert not isinstance(general, str), f"taken, but the general path: {general}"
        head, body = general
        assert relayed_answer_head(data[:end], keep_alive=keep_alive) == head
        assert plain.relayed == head + complete[end:]
        assert plain.remaining == end + length - len(complete)
        assert plain.reusable == (len(data) <= end + length)
        if whole:
            assert complete[end:] == body
    return True


# -- generated heads ---------------------------------------------------------------------------

_NAMES = [
    b"Host", b"host", b"HOST", b"User-Agent", b"Accept", b"Cookie", b"Referer", b"X-Custom",
    b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection", b"connection",
    b"Keep-Alive", b"TE", b"Trailer", b"Upgrade", b"Expect", b"X-Forwarded-For",
    b"X-Forwarded-Proto", b"X-Forwarded-Server", b"Forwarded", b"X-Real-IP", b"X-Request-ID",
    b"Proxy-Connection", b"Proxy-Authorization", b"Content_Length", b"X_Forwarded_For",
    b"Transfer-Encoding ", b" Host", b"Ho st", b"Hosts", b"Tenant", b"Server", b"Date",
    b"Content-Type", b"Set-Cookie", b"Location", b"Cache-Control",
]  # fmt: skip
_VALUES = [
    b"example.com", b"example.com:8080", b"[::1]:80", b"user@example.com", b"a.example, b",
    b"keep-alive", b"Keep-Alive", b"close", b"upgrade", b"chunked", b"chunked, identity",
    b"5", b"05", b"+5", b"0x5", b"5, 5", b"100-continue", b"websocket", b"text/plain",
    b"a=b; c=d", b"Mozilla/5.0 (X11)", b"", b" padded", b"padded ", b"tab\there", b"two  spaces",
    b"\x80obs", b"nul\x00", b"bare\rcr", b"x: y", b"Content-Length: 5",
]  # fmt: skip
_SEPARATORS = [b": "] * 6 + [b":", b":  ", b" : ", b":\t"]
_PLAIN_VALUES = [b"example.com", b"text/plain", b"a=b; c=d", b"Mozilla/5.0 (X11)", b"*/*", b"1"]


@st.composite
def _header_lines(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_NAMES),
                st.sampled_from(_SEPARATORS),
                st.sampled_from(_PLAIN_VALUES) | st.sampled_from(_VALUES) | st.binary(max_size=12),
            ),
            max_size=5,
        )
    )
    eol = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n"]))
    return b"".join(name + sep + value + eol for name, sep, value in lines)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    methods = [b"GET"] * 4 + [b"HEAD", b"POST", b"get", b"OPTIONS", b"CONNECT"]
    method = draw(st.sampled_from(methods))
    target = draw(
        st.sampled_from([b"/", b"/a/b?c=d&e", b"*", b"http://example.com/x", b"/%zz", b"/a#f"])
        | st.binary(min_size=1, max_size=10).map(lambda t: b"/" + t)
    )
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0"]))
    host = draw(st.sampled_from([b"Host: example.com\r\n"] * 3 + [b"host: a.b:80\r\n", b""]))
    before, after = draw(_header_lines()), draw(_header_lines())
    tail = draw(st.sampled_from([b"\r\n"] * 5 + [b"\n", b"\r\nabc", b"\r\nGET / HTTP/1.1\r\n\r\n"]))
    return method + b" " + target + b" " + version + b"\r\n" + before + host + after + tail


@st.composite
def _answers(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"]))
    statuses = [b"200", b"204", b"304", b"101", b"100", b"404", b"502", b"2000"]
    status = draw(st.sampled_from(statuses))
    reason = draw(st.sampled_from([b" OK", b" ", b"", b" Not Found", b" a\tb"]))
    length = draw(st.integers(0, 6))
    cl = draw(
        st.sampled_from(
            [b"Content-Length: %d\r\n" % length] * 3 + [b"content-length: %d\r\n" % length, b""]
        )
    )
    before, after = draw(_header_lines()), draw(_header_lines())
    body = draw(st.binary(max_size=8))
    return version + b" " + status + reason + b"\r\n" + before + cl + after + b"\r\n" + body


@st.composite
def _mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "case"]))
        if kind == "insert":
            data[where:where] = draw(
                st.sampled_from([b"\r\n", b"\n", b"\r", b" ", b"\t", b"\x00", b":", b"_", b","])
            )
        elif kind == "delete" and where < len(data):
            del data[where]
        elif where < len(data) and chr(data[where]).isalpha():
            data[where] ^= 0x20
    return bytes(data)


# -- the properties --------------------------------------------------------------------------

# CI's pass; docs/proxy.md has the long run (LBREC_FASTLANE_EXAMPLES=100000)
EXAMPLES = int(os.environ.get("LBREC_FASTLANE_EXAMPLES") or examples(1500))
_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_SETTINGS
@given(_requests() | _mutated(_requests()))
@example(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: keep-alive\r\nHost: a\r\n\r\n")
def test_a_request_the_lane_takes_is_the_general_paths(data: bytes) -> None:
    _assert_request_agrees(data)


@_SETTINGS
@given(_answers() | _mutated(_answers()))
@example(b"HTTP/1.1 200 OK\r\nX: Connection: keep-alive\r\nContent-Length: 1\r\n\r\nab")
@example(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX: alive\r\nContent-Length: 0\r\n\r\n")
@example(  # the review's: nginx's spelling after another one, both hop-by-hop
    b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nConnection: keep-alive\r\n"
    b"Content-Length: 2\r\n\r\nok"
)
def test_an_answer_the_lane_takes_is_the_general_paths(data: bytes) -> None:
    _assert_answer_agrees(data)


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda c: c.name)
def test_the_smuggling_corpus_never_takes_the_lane_unless_it_is_forwarded(case: object) -> None:
    raw = case.raw  # type: ignore[attr-defined]
    took = _assert_request_agrees(raw)
    if took:
        assert case.verdict == "forward", case  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=lambda c: c.name)
def test_the_answer_corpus_never_takes_the_lane_unless_it_is_relayed(case: object) -> None:
    took = _assert_answer_agrees(case.answer)  # type: ignore[attr-defined]
    if took:
        assert case.status < 500 or case.answer.startswith(b"HTTP/1.1 5"), case  # type: ignore[attr-defined]


_COMMON_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",  # wrk
    b"GET /x HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    (
        b"GET /static/app.js?v=12 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0"
        b" (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
        b"Connection: keep-alive\r\nCookie: a=b; c=d\r\n\r\n"
    ),
]
_COMMON_ANSWERS = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 23:15:26 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\ncontent-type: text/plain\r\n\r\nnot found",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart",  # the rest comes in the next read
]


@pytest.mark.parametrize("data", _COMMON_REQUESTS)
def test_common_requests_take_the_lane(data: bytes) -> None:
    assert _assert_request_agrees(data)


@pytest.mark.parametrize("data", _COMMON_ANSWERS)
def test_common_answers_take_the_lane(data: bytes) -> None:
    assert _assert_answer_agrees(data)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Token\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Token: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Token: 1 \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not whole yet
    ],
)
def test_special_requests_go_the_general_way(data: bytes) -> None:
    assert PLAIN_REQUEST.fullmatch(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n",  # not whole yet
    ],
)
def test_special_answers_go_the_general_way(data: bytes) -> None:
    match = PLAIN_ANSWER.match(data)
    assert match is None or int(match.group(1)) in (204, 304)


@_SETTINGS
@given(st.data())
def test_one_special_line_in_a_plain_head_is_the_general_paths(data: st.DataObject) -> None:
    """A plain head with one line of any name and value inserted anywhere."""
    lines = [b"Host: example.com", b"User-Agent: t/1", b"Accept: */*"]
    name = data.draw(st.sampled_from(_NAMES))
    line = name + data.draw(st.sampled_from(_SEPARATORS)) + data.draw(st.sampled_from(_VALUES))
    lines.insert(data.draw(st.integers(0, len(lines))), line)
    head = b"\r\n".join([b"GET / HTTP/1.1", *lines]) + b"\r\n\r\n"
    _assert_request_agrees(head)
    answer = [b"Server: t", b"Content-Length: 2", b"Date: today"]
    answer.insert(data.draw(st.integers(0, len(answer))), line)
    _assert_answer_agrees(b"\r\n".join([b"HTTP/1.1 200 OK", *answer]) + b"\r\n\r\nok")
