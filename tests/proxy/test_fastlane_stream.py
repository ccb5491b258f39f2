"""The fast lane on a connection: a byte stream cut into reads anywhere is the same requests,
in the same order, as llhttp reads from the whole stream (RFC 9112's reading).

tests/proxy/test_fastlane.py holds the lane to the general path one read at a time; this
holds the client connection to it across reads, where the lane must never take a read while
llhttp still buffers part of a head (a review found exactly that: a partial head after a
complete one in the same read, then a plain-looking read, which is really its headers)."""

from __future__ import annotations

import asyncio
import itertools

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbrec.proxy.downstream import ClientConnection
from lbrec.proxy.framing import RequestHead, check_request
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc
from tests.proxy.memory import MemoryTransport, memory_client
from tests.support.examples import examples

Seen = tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]]  # method, target, headers


_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _client(loop: asyncio.AbstractEventLoop) -> ClientConnection:
    """A client connection of a real ProxyServer with one backend, whose connections (eight,
    idle in its pool: a HEAD answer never goes back) are in memory."""
    return memory_client(loop, {"b": 1}, idle=8)


def _through_the_proxy(reads: list[bytes]) -> list[Seen]:
    """Feed ``reads`` to a real client connection of a real ProxyServer whose backend
    connections are in memory; after each read, the backend answers every request whose
    body is complete. Returns the requests the proxy sent on, in order. (No monkeypatching:
    the same test runs on the wheel, where the request path is compiled.)"""
    loop = asyncio.new_event_loop()
    try:
        client = _client(loop)
        seen: list[Seen] = []
        for data in reads:
            client.data_received(data)
            while not client.closed and client.active is not None:
                exchange = client.active
                if not exchange.body.complete or exchange.upstream is None:
                    break
                head = exchange.request
                seen.append((head.method, head.target, tuple(head.headers)))
                exchange.upstream.data_received(_ANSWER)
        return seen
    finally:
        loop.close()


class _Reference:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.heads: list[Seen] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head = check_request(
            self.parser.get_method(), self.url, self.parser.get_http_version(), self.headers
        )
        assert isinstance(head, RequestHead), head  # the streams below are all valid
        self.heads.append((head.method, head.target, tuple(head.headers)))
        self.url, self.headers = b"", []


def _read_by_llhttp(stream: bytes) -> list[Seen]:
    reference = _Reference()
    reference.parser.feed_data(stream)
    return reference.heads


_REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /b?x=1 HTTP/1.1\r\nHost: a.example:8080\r\nAccept: */*\r\n\r\n",
    b"GET /c HTTP/1.1\r\nUser-Agent: t/1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET /d HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",  # general path
    b"GET /e HTTP/1.1\r\nHost: a\r\nX-Token:  padded \r\n\r\n",  # general path (OWS)
    b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /g HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /h HTTP/1.1\r\nHost: a\r\nX-A: GET /admin HTTP/1.1\r\n\r\n",
    # cut after "X-A: ", its rest is a plain request on its own
    b"GET /allowed HTTP/1.1\r\nX-A: GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
]


@st.composite
def _cut_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = b"".join(draw(st.lists(st.sampled_from(_REQUESTS), min_size=1, max_size=6)))
    # cut anywhere, and often just after a line end or a header's ": " (where a read that
    # looks like a whole request can begin inside another one)
    marks = [i + 2 for i in range(len(stream) - 2) if stream[i : i + 2] in (b"\r\n", b": ")]
    places = st.integers(1, len(stream) - 1) | st.sampled_from(marks)
    cuts = sorted(set(draw(st.lists(places, max_size=6))) - {len(stream)})
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=examples(2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cut_streams())
def test_any_cut_of_a_stream_is_the_requests_llhttp_reads(
    cut: tuple[bytes, list[bytes]],
) -> None:
    stream, reads = cut
    assert _through_the_proxy(reads) == _read_by_llhttp(stream)


def test_a_plain_read_after_a_buffered_partial_head_is_its_headers() -> None:
    """The review's case: /admin must not be served, it is a header of /allowed."""
    reads = [
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /allowed HTTP/1.1\r\nX-A: ",
        b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    seen = _through_the_proxy(reads)
    assert [target for _, target, _ in seen] == [b"/a", b"/allowed"]
    assert seen == _read_by_llhttp(b"".join(reads))


async def test_a_plain_read_after_a_partial_head_on_a_real_proxy(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    """The same on sockets: the backend sees /a, then /allowed with X-A; /admin never."""
    backend = await backends("a")
    running = await proxy(config_doc([("a", backend.url, 1)]))
    reader, writer = await asyncio.open_connection("127.0.0.1", running.info.listen[1])
    try:
        writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /allowed HTTP/1.1\r\nX-A: ")
        first = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
        assert b'"path": "/a"' in first
        await asyncio.sleep(0.1)  # /a answered: no exchange in flight, a head half-read
        writer.write(b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
        second = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
    finally:
        writer.close()
    assert b'"path": "/allowed"' in second, second
    assert backend.seen_headers[-1].get("X-A") == "GET /admin HTTP/1.1"
    assert backend.hits == 2


# -- answers: the lane against the general path, on the same connection machinery -----------

Relayed = tuple[bytes, bool, bool]  # what the client got, connection reused, client closed


def _answer_relayed(request: bytes, reads: list[bytes]) -> Relayed:
    """Send ``request``, answer it with ``reads`` from the backend: what the client got."""
    loop = asyncio.new_event_loop()
    try:
        client = _client(loop)
        client.data_received(request)
        exchange = client.active
        assert exchange is not None and exchange.upstream is not None
        upstream = exchange.upstream
        for data in reads:
            if upstream.closed or upstream.listener is None:
                break
            upstream.data_received(data)
        transport = client.transport
        assert isinstance(transport, MemoryTransport)
        reused = upstream in exchange.backend.conns.idle if exchange.backend else False
        return bytes(transport.written), reused, client.closed
    finally:
        loop.close()


_ANSWER_HEADS = [
    b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n\r\n",
    b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nConnection: keep-alive\r\n"
    b"Content-Length: 5\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
]
_REQUEST_HEADS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",  # the lane
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",  # general, closes after
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",  # general, HTTP/1.0 client
    b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",  # the lane; its answer the general way
]


@st.composite
def _answer_cases(draw: st.DrawFn) -> tuple[bytes, bytes, list[int]]:
    head = draw(st.sampled_from(_ANSWER_HEADS))
    body = draw(st.sampled_from([b"hello", b"hel", b"hello!", b"helloHTTP/1.1 200 OK\r\n\r\n"]))
    answer = head + body + (b"\r\n0\r\n\r\n" if b"chunked" in head else b"")
    cuts = sorted(set(draw(st.lists(st.integers(len(head), len(answer) - 1), max_size=3))))
    return draw(st.sampled_from(_REQUEST_HEADS)), answer, cuts


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=examples(800), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_answer_cases())
def test_an_answer_relays_the_same_with_or_without_the_lane(
    case: tuple[bytes, bytes, list[int]],
) -> None:
    """The lane takes an answer only when its first read holds the whole head: the same
    answer with its first read cut inside the head goes the general way. The client must get
    the same bytes, and the backend connection the same fate, both ways."""
    request, answer, cuts = case
    lane = _answer_relayed(request, _split(answer, cuts))
    general = _answer_relayed(request, _split(answer, [5, *cuts]))
    assert lane == general
