"""Downgrade smuggling over HTTP/2: every request an HTTP/1.1 backend could read differently
from the proxy is refused (a stream or connection error, or a 4xx) and never reaches it.

Each case is written frame by frame (tests/proxy/http2/support.py's RawClient: no client-side
validation) on a connection of its own, against one proxy in front of the desync suite's
recording backend (h11: it records every request it reads and every framing error). After
each case a victim request must come back answered by the victim, and the backend must have
read exactly the requests the case allows: none for a refused case. The classes are those of
http2smugl (H2.CL, H2.TE, CRLF/NUL injection in names, values and pseudo-headers,
connection-specific fields, pseudo-header abuse) and of RFC 9113 8.1-8.3 (h2spec's section 8
cases); docs/proxy-conformance.md has the table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.proxy.desync.harness import Recorder, start_recorder
from tests.support.certs import CertAuthority

from .support import H2Client, H2Proxy, Outcome, RawClient, frame, h2_proxy

pytestmark = pytest.mark.timeout(120)

REFUSED = {"RST_STREAM(PROTOCOL_ERROR)", "GOAWAY(PROTOCOL_ERROR)"}
Fields = list[tuple[bytes, bytes]]


def _pseudo(
    method: bytes = b"GET", path: bytes = b"/", authority: bytes | None = b"a.example"
) -> Fields:
    fields = [(b":method", method), (b":scheme", b"https")]
    if authority is not None:
        fields.append((b":authority", authority))
    return [*fields, (b":path", path)]


@dataclass
class Case:
    name: str
    fields: Fields
    data: list[tuple[bytes, bool]] = field(default_factory=list)  # DATA frames: payload, end
    expect: set[str] = field(default_factory=lambda: set(REFUSED))
    forwarded: int = 0  # requests the backend may read
    split: bool = False  # DATA in a later write than HEADERS (the exchange has started)
    trailers: Fields | None = None

    @property
    def end_on_headers(self) -> bool:
        return not self.data and self.trailers is None


POST = _pseudo(b"POST", b"/upload")
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n"

CASES = [
    # H2.CL: content-length against the DATA frames
    Case("h2.cl longer DATA", [*POST, (b"content-length", b"5")], [(b"01234" + SMUGGLED, True)]),
    Case(
        "h2.cl longer DATA, later read",
        [*POST, (b"content-length", b"5")],
        [(b"01234" + SMUGGLED, True)],
        split=True,
    ),
    Case("h2.cl shorter DATA", [*POST, (b"content-length", b"100")], [(b"01234", True)]),
    Case(
        "h2.cl shorter DATA, later read",
        [*POST, (b"content-length", b"100")],
        [(b"01234", True)],
        split=True,
    ),
    Case("h2.cl on a request without body", [*POST, (b"content-length", b"5")]),
    Case("h2.cl zero with DATA", [*POST, (b"content-length", b"0")], [(SMUGGLED, True)]),
    Case("h2.cl signed", [*POST, (b"content-length", b"+5")], [(b"01234", True)]),
    Case("h2.cl list", [*POST, (b"content-length", b"5, 5")], [(b"01234", True)]),
    Case(
        "h2.cl twice differing",
        [*POST, (b"content-length", b"5"), (b"content-length", b"6")],
        [(b"01234", True)],
    ),
    Case(
        "h2.cl twice equal",
        [*POST, (b"content-length", b"5"), (b"content-length", b"5")],
        [(b"01234", True)],
        expect={*REFUSED, "400"},
    ),
    # H2.TE: any transfer-encoding
    Case(
        "h2.te chunked",
        [*POST, (b"transfer-encoding", b"chunked")],
        [(b"0\r\n\r\n" + SMUGGLED, True)],
    ),
    Case(
        "h2.te chunked with content-length",
        [*POST, (b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"0\r\n\r\n", True)],
    ),
    Case("te: gzip", [*_pseudo(), (b"te", b"gzip")]),
    Case(
        "te: trailers (allowed, not forwarded)",
        [*_pseudo(), (b"te", b"trailers")],
        expect={"200"},
        forwarded=1,
    ),
    # connection-specific fields (RFC 9113 8.2.2)
    Case("connection", [*_pseudo(), (b"connection", b"close")]),
    Case("keep-alive", [*_pseudo(), (b"keep-alive", b"timeout=5")]),
    Case("proxy-connection", [*_pseudo(), (b"proxy-connection", b"keep-alive")]),
    Case("upgrade", [*_pseudo(), (b"upgrade", b"websocket")]),
    # CR, LF, NUL (RFC 9113 8.2.1), in values, names and pseudo-headers
    Case("CRLF in a value", [*_pseudo(), (b"x-a", b"1\r\nx-injected: 1")]),
    Case("LF in a value", [*_pseudo(), (b"x-a", b"1\nx-injected: 1")]),
    Case("CR in a value", [*_pseudo(), (b"x-a", b"1\rx")]),
    Case("NUL in a value", [*_pseudo(), (b"x-a", b"1\x00x")]),
    Case("CRLF in a name", [*_pseudo(), (b"x-a\r\ntransfer-encoding", b"chunked")]),
    Case("colon in a name", [*_pseudo(), (b"x-a:b", b"1")]),
    Case("space in a name", [*_pseudo(), (b"x a", b"1")]),
    Case("empty name", [*_pseudo(), (b"", b"1")]),
    Case("upper-case name", [*_pseudo(), (b"X-Upper", b"1")]),
    Case("leading space in a value", [*_pseudo(), (b"x-a", b" 1")]),
    Case("trailing tab in a value", [*_pseudo(), (b"x-a", b"1\t")]),
    Case(
        "request line in :path",
        _pseudo(path=b"/ HTTP/1.1\r\nHost: a.example\r\n\r\nGET /s"),
        expect={*REFUSED, "400"},
    ),
    Case("space in :path", _pseudo(path=b"/a HTTP/1.1"), expect={"400"}),
    Case(
        "request line in :method",
        _pseudo(method=b"GET /smuggled HTTP/1.1\r\nX:"),
        expect={*REFUSED, "400"},
    ),
    Case("space in :method", _pseudo(method=b"GET /x"), expect={"400"}),
    Case("CRLF in :authority", _pseudo(authority=b"a.example\r\nx-injected: 1")),
    Case("CRLF in host", [*_pseudo(authority=None), (b"host", b"a.example\r\nx: 1")]),
    # pseudo-header fields (RFC 9113 8.3)
    Case(
        ":method missing", [(b":scheme", b"https"), (b":authority", b"a.example"), (b":path", b"/")]
    ),
    Case(
        ":path missing",
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example")],
    ),
    Case(
        ":scheme missing", [(b":method", b"GET"), (b":authority", b"a.example"), (b":path", b"/")]
    ),
    Case(":path empty", _pseudo(path=b"")),
    Case(":path twice", [*_pseudo(), (b":path", b"/admin")]),
    Case(":method twice", [(b":method", b"GET"), *_pseudo(method=b"POST")]),
    Case("unknown pseudo-header", [*_pseudo(), (b":foo", b"bar")]),
    Case(":status in a request", [*_pseudo(), (b":status", b"200")]),
    Case(
        "pseudo-header after a field",
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b"x-a", b"1"),
            (b":authority", b"a.example"),
            (b":path", b"/"),
        ],
    ),
    Case(":path absolute form", _pseudo(path=b"http://evil.example/x"), expect={"400"}),
    Case(":path asterisk with GET", _pseudo(path=b"*"), expect={"400"}),
    Case(
        ":scheme ftp",
        [
            (b":method", b"GET"),
            (b":scheme", b"ftp"),
            (b":authority", b"a.example"),
            (b":path", b"/"),
        ],
        expect={"400"},
    ),
    Case(":authority with userinfo", _pseudo(authority=b"user@a.example"), expect={"400"}),
    Case(
        ":authority against host",
        [*_pseudo(), (b"host", b"evil.example")],
        expect={*REFUSED, "400"},
    ),
    Case("no :authority and no host", _pseudo(authority=None), expect={*REFUSED, "400"}),
    Case(
        "two hosts without :authority",
        [*_pseudo(authority=None), (b"host", b"a.example"), (b"host", b"evil.example")],
        expect={*REFUSED, "400"},
    ),
    Case("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"a.example:443")], expect={"405"}),
    Case(
        "extended CONNECT (RFC 8441)",
        [*_pseudo(method=b"CONNECT"), (b":protocol", b"websocket")],
        expect={"405"},
    ),
    Case("TRACE", _pseudo(method=b"TRACE"), expect={"405"}),
    # fields the proxy forwards its own way
    Case(
        "content_length with underscore (dropped)",
        [*POST, (b"content_length", b"50")],
        [(b"01234", True)],
        expect={"200"},
        forwarded=1,
    ),
    Case(
        "trailers (dropped)",
        [*POST],
        [(b"01234", False)],
        trailers=[(b"x-trailer", b"1")],
        expect={"200"},
        forwarded=1,
    ),
    Case(
        "pseudo-header in trailers", [*POST], [(b"01234", False)], trailers=[(b":path", b"/admin")]
    ),
    Case("CRLF in a trailer", [*POST], [(b"01234", False)], trailers=[(b"x-t", b"1\r\nx: 2")]),
]


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


@pytest.fixture
async def setup(ca: CertAuthority) -> AsyncIterator[tuple[H2Proxy, Recorder]]:
    recorder = await start_recorder()
    async with h2_proxy(ca, f"http://127.0.0.1:{recorder.port}") as proxy:
        yield proxy, recorder
    await recorder.close()


def header_frames(sid: int, block: bytes, *, end_stream: bool, size: int = 16384) -> bytes:
    """HEADERS and as many CONTINUATION frames as ``block`` needs."""
    parts = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
    out = b""
    for i, part in enumerate(parts):
        flags = 0x4 if i == len(parts) - 1 else 0
        if i == 0:
            out += frame(1, flags | (0x1 if end_stream else 0), sid, part)
        else:
            out += frame(9, flags, sid, part)
    return out


async def run_case(
    ca: CertAuthority,
    proxy: H2Proxy,
    case: Case,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> Outcome:
    client = await RawClient.connect(ca, proxy.tls_port)
    out = header_frames(1, client.block(case.fields), end_stream=case.end_on_headers)
    rest = b""
    for i, (payload, ended) in enumerate(case.data):
        last = ended and i == len(case.data) - 1
        rest += frame(0, 0x1 if last else 0, 1, payload)
    if case.trailers is not None:
        rest += frame(1, 0x5, 1, client.block(case.trailers))
    if case.split:
        await client.write(out)
        await asyncio.sleep(0.2)
        await client.write(rest)
    else:
        await client.write(out + rest)
    outcome = await client.wait_outcome(1, timeout)
    await client.close()
    return outcome


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case(ca: CertAuthority, setup: tuple[H2Proxy, Recorder], case: Case) -> None:
    proxy, recorder = setup
    outcome = await run_case(ca, proxy, case)
    assert str(outcome) in case.expect, f"{case.name}: {outcome}"
    await asyncio.sleep(0.1)
    victim = await H2Client.connect(ca, proxy.tls_port)
    answer = await victim.get("/victim")
    await victim.close()
    assert answer.status == 200
    targets = [r.target for r in recorder.requests]
    assert targets[-1] == b"/victim"
    assert len(targets) == case.forwarded + 1, targets
    assert recorder.errors == []
    for seen in recorder.requests:
        assert not seen.header(b"x-injected")
        assert not seen.header(b"te")
        assert not seen.header(b"x-trailer")
        assert not seen.header(b"content_length")
        assert b"smuggled" not in seen.target and b"admin" not in seen.target


async def test_limits_of_the_http11_path(
    ca: CertAuthority, setup: tuple[H2Proxy, Recorder]
) -> None:
    """414 for a :path over max_header_bytes, 431 for more than 100 fields or too many bytes,
    413 for a content-length over max_body_bytes; 100 fields pass."""
    proxy, recorder = setup
    limit = proxy.server.max_header_bytes
    cases = [
        (Case("long path", _pseudo(path=b"/" + b"a" * limit), expect={"414"}), 414),
        (Case("101 fields", [*_pseudo(), *[(b"x-f%d" % i, b"1") for i in range(101)]]), 431),
        (Case("100 fields", [*_pseudo(), *[(b"x-f%d" % i, b"1") for i in range(100)]]), 200),
        (Case("big fields", [*_pseudo(), (b"x-big", b"b" * limit)]), 431),
    ]
    for case, status in cases:
        outcome = await run_case(ca, proxy, case)
        assert outcome.status == status, f"{case.name}: {outcome}"
    assert len(recorder.requests) == 1
