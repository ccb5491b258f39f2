"""The HTTP/2 floods, each refused with a bounded cost (proxy/http2/guard.py and h2's limits).

Every test writes a bounded number of hostile frames (at most a few thousand, in batches, on
127.0.0.1) and then measures what the proxy spent before it ended the connection: the frames
it took (at most the budget of proxy/http2/guard.py), the bytes it wrote back, the backend
requests it made, the header bytes it held. The numbers are docs/proxy-conformance.md's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lbrec.proxy.http2.connection import MAX_CONCURRENT_STREAMS, STREAM_HIGH
from lbrec.proxy.http2.guard import BUDGETS, MAX_CONTINUATIONS
from tests.proxy.conftest import Backend, BackendFactory
from tests.support.certs import CertAuthority

from .support import H2Client, H2Proxy, RawClient, frame, h2_proxy

pytestmark = pytest.mark.timeout(120)

CALM = 0xB
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example")]


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


@pytest.fixture
async def setup(
    ca: CertAuthority, backends: BackendFactory
) -> AsyncIterator[tuple[H2Proxy, Backend]]:
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url, timeouts={"read": 5, "idle": 1.5}) as proxy:
        yield proxy, backend


async def flood(client: RawClient, frames: list[bytes], batch: int = 100) -> int:
    """Write ``frames`` in batches until the server closes; the frames written."""
    written = 0
    for at in range(0, len(frames), batch):
        if client.closed or not await client.write(b"".join(frames[at : at + batch])):
            break
        written += len(frames[at : at + batch])
        await client.read_frames(0.001)
    await client.drain_until_closed(5)
    return written


def count(client: RawClient, kind: int) -> int:
    return sum(1 for k, _flags, _sid, _payload in client.received if k == kind)


@pytest.mark.parametrize("apart", [False, True], ids=["same read", "separate writes"])
async def test_rapid_reset(ca: CertAuthority, setup: tuple[H2Proxy, Backend], apart: bool) -> None:
    """CVE-2023-44487: HEADERS then RST_STREAM, up to 5,000 times: GOAWAY ENHANCE_YOUR_CALM
    after the RST_STREAM budget, and at most that many requests ever reach a backend (none
    when each pair arrives in one read: its exchange never starts)."""
    proxy, backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    frames = []
    for i in range(5000):
        sid = 2 * i + 1
        frames.append(frame(1, 0x5, sid, client.block([*GET, (b":path", b"/reset")])))
        frames.append(frame(3, 0, sid, (8).to_bytes(4, "big")))
    if not apart:
        frames = [frames[i] + frames[i + 1] for i in range(0, len(frames), 2)]
    started = time.monotonic()
    written = await flood(client, frames, batch=1 if apart else 20)
    written = written // 2 if apart else written
    elapsed = time.monotonic() - started
    assert client.goaway() == CALM
    assert written < 5000
    await asyncio.sleep(0.2)
    print(
        f"GOAWAY(ENHANCE_YOUR_CALM) after {written} of 5,000 pairs; {backend.hits} backend "
        f"requests; {client.bytes_in} bytes back; {elapsed:.2f} s"
    )
    assert backend.hits <= BUDGETS.rst_stream + MAX_CONCURRENT_STREAMS
    if not apart:
        assert backend.hits == 0
    # and the proxy serves the next client as before
    other = await H2Client.connect(ca, proxy.tls_port)
    assert (await other.get("/after")).status == 200
    await other.close()


async def test_continuation_flood(ca: CertAuthority, setup: tuple[H2Proxy, Backend]) -> None:
    """2024's CONTINUATION flood: a header block that never ends. Ended after 64 frames or
    twice max_header_bytes, whichever first: never more than that is held."""
    proxy, _backend = setup
    for size in (16384, 0):
        client = await RawClient.connect(ca, proxy.tls_port)
        head = frame(1, 0x0, 1, client.block([*GET, (b":path", b"/")]))
        frames = [head] + [frame(9, 0, 1, b"a" * size) for _ in range(2000)]
        written = await flood(client, frames, batch=10)
        from lbrec.proxy.http2.connection import REFUSALS

        assert client.goaway() == CALM, (size, client.goaway(), REFUSALS)
        held = proxy.made[-1].h2.incoming_buffer._headers_buffer
        held_bytes = sum(len(f.data) for f in held)
        print(
            f"{size}-byte frames: GOAWAY(ENHANCE_YOUR_CALM) after {written - 1} CONTINUATION "
            f"frames written; {held_bytes} header bytes held"
        )
        assert held_bytes <= 2 * proxy.server.max_header_bytes
        assert len(held) <= MAX_CONTINUATIONS + 1


async def test_hpack_bomb(ca: CertAuthority, setup: tuple[H2Proxy, Backend]) -> None:
    """A 4 KiB field in the dynamic table, then referenced 4,000 times (one byte each): 16 MiB
    once decoded. The decoder stops at twice max_header_bytes: GOAWAY, nothing forwarded."""
    proxy, backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    block = client.block([*GET, (b":path", b"/bomb"), (b"x-bomb", b"a" * 4000)])
    index = 62  # the newest entry of the dynamic table
    block += bytes([0x80 | index]) * 4000  # an indexed field: one byte
    chunks = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    out = frame(1, 0x1 | (0x4 if len(chunks) == 1 else 0), 1, chunks[0])
    for i, part in enumerate(chunks[1:], 1):
        out += frame(9, 0x4 if i == len(chunks) - 1 else 0, 1, part)
    await client.write(out)
    await client.drain_until_closed(5)
    print(
        f"{len(block)} bytes encoding 16 MiB: GOAWAY({client.goaway()}) once the decoder "
        f"passed {2 * proxy.server.max_header_bytes} bytes; {backend.hits} backend requests"
    )
    assert client.goaway() == CALM
    assert backend.hits == 0


@pytest.mark.parametrize(
    ("name", "make", "budget"),
    [
        ("SETTINGS", lambda: frame(4, 0, 0, b""), BUDGETS.settings),
        ("SETTINGS ACK", lambda: frame(4, 1, 0, b""), BUDGETS.settings),
        ("PING", lambda: frame(6, 0, 0, b"12345678"), BUDGETS.ping),
        ("PRIORITY", lambda: frame(2, 0, 3, b"\x00\x00\x00\x01\x10"), BUDGETS.priority),
        ("WINDOW_UPDATE", lambda: frame(8, 0, 0, (1).to_bytes(4, "big")), BUDGETS.window_update),
        ("unknown type", lambda: frame(0xFA, 0, 0, b"x"), BUDGETS.unknown),
    ],
)
async def test_control_frame_floods(
    ca: CertAuthority, setup: tuple[H2Proxy, Backend], name: str, make: object, budget: int
) -> None:
    """Frames that do no work for a request, 5,000 of them: GOAWAY ENHANCE_YOUR_CALM once the
    budget of the window is spent; what the proxy wrote back (ACKs) stays within it."""
    proxy, _backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    assert callable(make)
    written = await flood(client, [make() for _ in range(5000)])
    acks = count(client, 6) + count(client, 4)
    print(
        f"GOAWAY(ENHANCE_YOUR_CALM) with {written} of 5,000 written; {acks} SETTINGS/PING "
        f"frames back; {client.bytes_in} bytes back"
    )
    assert client.goaway() == CALM, name
    assert acks <= budget + 3  # the server's own SETTINGS and acks of the client's first
    assert client.bytes_in < 64 * 1024
    # and the operator sees it: lbrec_proxy_http2_refusals{reason="<name> flood"}
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from lbrec.proxy.metrics import ProxyCollector

    registry = CollectorRegistry()
    registry.register(ProxyCollector(proxy.server))
    scraped = generate_latest(registry).decode()
    reason = {"unknown type": "flood of frames of unknown type", "SETTINGS ACK": "SETTINGS flood"}
    expected = reason.get(name, f"{name} flood")
    assert f'lbrec_proxy_http2_refusals_total{{reason="{expected}"' in scraped


async def test_empty_data_flood(ca: CertAuthority, setup: tuple[H2Proxy, Backend]) -> None:
    proxy, _backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    head = frame(1, 0x4, 1, client.block([(b":method", b"POST"), *GET[1:], (b":path", b"/")]))
    written = await flood(client, [head] + [frame(0, 0, 1, b"") for _ in range(5000)])
    print(f"GOAWAY(ENHANCE_YOUR_CALM) with {written} of 5,001 frames written")
    assert client.goaway() == CALM
    assert written <= 5001


async def test_too_many_concurrent_streams(
    ca: CertAuthority, setup: tuple[H2Proxy, Backend]
) -> None:
    """SETTINGS_MAX_CONCURRENT_STREAMS is 100, advertised and enforced: the 101st open stream
    ends the connection (h2: PROTOCOL_ERROR), and 100 at once are served."""
    proxy, backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    await client.read_frames(1)
    settings = next(p for k, f, _s, p in client.received if k == 4 and not f & 1)
    values = {
        int.from_bytes(settings[i : i + 2], "big"): int.from_bytes(settings[i + 2 : i + 6], "big")
        for i in range(0, len(settings), 6)
    }
    assert values[0x3] == MAX_CONCURRENT_STREAMS
    out = b"".join(
        frame(1, 0x5, 2 * i + 1, client.block([*GET, (b":path", b"/slow?s=1")]))
        for i in range(MAX_CONCURRENT_STREAMS + 1)
    )
    await client.write(out)
    await client.drain_until_closed(5)
    assert client.goaway() in (0x1, 0x7)
    print(f"GOAWAY({client.goaway()}) at the 101st HEADERS; 100 streams at once: all answered")
    good = await H2Client.connect(ca, proxy.tls_port)
    sids = [await good.start(good.request_headers(f"/c{i}")) for i in range(100)]
    assert [(await good.response(sid)).status for sid in sids] == [200] * 100
    await good.close()
    del backend


async def test_oversized_frame_is_refused_at_its_header(
    ca: CertAuthority, setup: tuple[H2Proxy, Backend]
) -> None:
    """A frame header announcing 16 MiB: h2 would buffer it whole before looking at its
    length; the guard ends the connection at the 9 bytes (FRAME_SIZE_ERROR)."""
    proxy, _backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    length = (1 << 24) - 1
    await client.write(length.to_bytes(3, "big") + bytes([0, 0]) + (1).to_bytes(4, "big"))
    await client.write(b"x" * 65536)
    await client.drain_until_closed(5)
    assert client.goaway() == 0x6
    held = len(proxy.made[-1].h2.incoming_buffer._data)
    assert held < 65536
    print(f"GOAWAY(FRAME_SIZE_ERROR) at the 9-byte header; {held} bytes held by h2")


async def test_zero_window_stall(ca: CertAuthority, setup: tuple[H2Proxy, Backend]) -> None:
    """A client that never opens its window: the answer waits (at most STREAM_HIGH and one
    read of the backend), the backend is paused, and the stream is reset after timeouts.idle."""
    proxy, _backend = setup
    client = await H2Client.connect(ca, proxy.tls_port, settings={0x4: 0})
    sid = await client.start(client.request_headers("/big?mib=8"))
    started = time.monotonic()
    answer = await client.response(sid, timeout=10)
    elapsed = time.monotonic() - started
    conn = proxy.made[-1]
    print(f"RST_STREAM({answer.reset}) {elapsed:.1f} s after the request; the stream released")
    assert answer.reset is not None and answer.reset > 0
    assert elapsed < 1.5 + 3
    assert not conn.streams  # released
    assert STREAM_HIGH
    await client.close()


async def test_data_on_a_refused_stream_costs_no_window(
    ca: CertAuthority, setup: tuple[H2Proxy, Backend]
) -> None:
    """A request refused with its body still coming (here 405): the client keeps sending 1.5
    MiB on that stream. The connection's window is handed back for it (no FLOW_CONTROL_ERROR
    later), the proxy answers each frame with at most one RST_STREAM, and the next request
    on the connection, with a body, is served."""
    proxy, _backend = setup
    client = await RawClient.connect(ca, proxy.tls_port)
    head = [(b":method", b"TRACE"), *GET[1:], (b":path", b"/")]
    await client.write(frame(1, 0x4, 1, client.block(head)))
    outcome = await client.wait_outcome(1)
    assert outcome.status == 405
    for _ in range(96):  # 1.5 MiB, past the connection's window if it leaked
        if not await client.write(frame(0, 0, 1, b"d" * 16384)):
            break
    await client.read_frames(0.5)
    post = [(b":method", b"POST"), *GET[1:], (b":path", b"/after"), (b"content-length", b"5")]
    await client.write(frame(1, 0x4, 3, client.block(post)) + frame(0, 0x1, 3, b"hello"))
    after = await client.wait_outcome(3)
    resets = count(client, 3)
    print(f"1.5 MiB on a refused stream: {resets} RST_STREAM back; next request {after}")
    assert after.status == 200, after
    assert client.goaway() is None
    assert resets <= 97


async def test_an_unfinished_header_block_gets_timeouts_header(
    ca: CertAuthority, backends: BackendFactory
) -> None:
    """Slowloris over HTTP/2: HEADERS without END_HEADERS, then nothing. The block is a
    request head that has not arrived: GOAWAY (ENHANCE_YOUR_CALM) after timeouts.header (1 s
    here), as an HTTP/1.1 head gets 408, not after timeouts.idle."""
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url, timeouts={"header": 1, "idle": 30}) as proxy:
        client = await RawClient.connect(ca, proxy.tls_port)
        started = time.monotonic()
        await client.write(frame(1, 0x0, 1, client.block([*GET, (b":path", b"/")])))
        await client.drain_until_closed(10)
        elapsed = time.monotonic() - started
        print(f"GOAWAY({client.goaway()}) {elapsed:.1f} s after an unfinished header block")
        assert client.goaway() == CALM
        assert 0.9 < elapsed < 3
