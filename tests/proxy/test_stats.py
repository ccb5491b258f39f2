"""The status page's pure parts: the bucket ring, percentiles from fixed buckets, and the
classification of health-check results (plus the probes that produce them, against real
servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import aiohttp
import pytest

from lbrec.proxy.config import HealthSettings
from lbrec.proxy.health import (
    HealthMonitor,
    HealthState,
    ProbeResult,
    ProbeTarget,
    RiseFall,
    classify_error,
    classify_status,
)
from lbrec.proxy.stats import (
    LATENCY_BOUNDS,
    STATUS_CLASSES,
    BackendStats,
    merge,
    percentile,
)
from tests.proxy.conftest import BackendFactory

N = len(LATENCY_BOUNDS) + 1


def _hist(**counts: int) -> list[int]:
    """A histogram with counts at the buckets named b<index>."""
    hist = [0] * N
    for name, count in counts.items():
        hist[int(name[1:])] = count
    return hist


# -- percentiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hist", "q", "expected"),
    [
        ([0] * N, 0.5, None),  # nothing observed
        (_hist(b0=10), 0.5, 0.00025),  # halfway into (0, 0.5 ms]
        (_hist(b0=10), 1.0, 0.0005),
        (_hist(b0=10), 0.0, 0.0),
        (_hist(b1=1, b3=1), 0.5, 0.001),  # the rank lands at the top of the first bucket
        (_hist(b1=1, b3=3), 0.5, 0.002 + 0.001 * (1 / 3)),  # (2 ms, 3 ms], a third in
        (_hist(b12=99, b20=1), 0.99, 0.1),  # p99 of 99 fast and 1 slow: still fast
        (_hist(b12=98, b20=2), 0.99, 1.5 + 0.5 * 0.5),
        (_hist(b26=5), 0.5, 30.0),  # overflow bucket: its lower bound, as Prometheus does
    ],
)
def test_percentile(hist: list[int], q: float, expected: float | None) -> None:
    got = percentile(hist, q)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"q must be between 0 and 1, got 1\.5"):
        percentile([0] * N, 1.5)
    with pytest.raises(ValueError, match=r"histogram has 3 buckets, expected 27"):
        percentile([1, 2, 3], 0.5)


def test_merge() -> None:
    assert merge([[1, 2], [3, 4], [0, 1]], 2) == [4, 7]
    assert merge([], 3) == [0, 0, 0]


# -- the data-path hook ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "klass"),
    [
        (b"HTTP/1.1 200 OK\r\n", "2xx"),
        (b"HTTP/1.1 304 Not Modified\r\n", "3xx"),
        (b"HTTP/1.0 404 Not Found\r\n", "4xx"),
        (b"HTTP/1.1 503 Service Unavailable\r\n", "5xx"),
        (b"HTTP/1.1 100 Continue\r\n", "1xx"),
        (b"HTTP/1.1 999 odd\r\n", "other"),
        (b"HTTP/1.1 ", "other"),  # the status is in the next read
        (b"garbage!!!!!", "other"),
    ],
)
def test_first_byte_counts_the_status_class(data: bytes, klass: str) -> None:
    stats = BackendStats()
    stats.first_byte(data, 0.001)
    assert dict(zip(STATUS_CLASSES, stats.status, strict=True))[klass] == 1
    assert sum(stats.status) == 1


@pytest.mark.parametrize(
    ("elapsed", "bucket"),
    [(0.0, 0), (0.0005, 0), (0.00051, 1), (0.001, 1), (0.0011, 2), (30.0, N - 2), (99.0, N - 1)],
)
def test_first_byte_latency_bucket_is_upper_bound_inclusive(elapsed: float, bucket: int) -> None:
    stats = BackendStats()
    stats.first_byte(b"HTTP/1.1 200 OK", elapsed)
    assert stats.latency.index(1) == bucket


# -- the ring ----------------------------------------------------------------------------------


def test_rotate_keeps_differences_of_the_running_totals() -> None:
    stats = BackendStats(now=100.0)
    stats.first_byte(b"HTTP/1.1 200 OK", 0.002)
    stats.rotate(requests=10, errors=1, now=105.0)
    stats.rotate(requests=25, errors=1, now=110.0)
    first, second = stats.ring
    assert (first.start, first.end, first.requests, first.errors) == (100.0, 105.0, 10, 1)
    assert (second.start, second.end, second.requests, second.errors) == (105.0, 110.0, 15, 0)
    assert first.status[2] == 1 and sum(second.status) == 0  # the open bucket moved on
    assert stats.series()["rps"] == [2.0, 3.0]
    assert stats.series()["eps"] == [0.2, 0.0]
    assert stats.series()["p50"][1] is None  # no answers: no latency, not zero
    assert stats.series()["p50"][0] == pytest.approx(1.5)  # ms, halfway into (1 ms, 2 ms]


def test_ring_is_bounded_and_totals_survive_eviction() -> None:
    stats = BackendStats(now=0.0, buckets=3)
    for tick in range(1, 6):
        stats.first_byte(b"HTTP/1.1 500 x", 0.001)
        stats.rotate(requests=tick, errors=tick, now=tick * 5.0)
    assert [bucket.end for bucket in stats.ring] == [15.0, 20.0, 25.0]
    stats.first_byte(b"HTTP/1.1 200 OK", 0.001)  # the open bucket counts too
    totals = dict(zip(STATUS_CLASSES, stats.status_totals(), strict=True))
    assert totals["5xx"] == 5 and totals["2xx"] == 1


def test_window_covers_the_open_bucket_and_recent_closed_ones() -> None:
    stats = BackendStats(now=0.0)
    for tick in range(1, 5):  # four 5-second buckets of 10 requests, 1 error
        stats.first_byte(b"HTTP/1.1 200 OK", 0.004)
        stats.rotate(requests=tick * 10, errors=tick, now=tick * 5.0)
    window = stats.window(span=10.0, now=22.0, requests=46, errors=4)
    # buckets ending at 15 and 20 (after 22 - 10 = 12) and the open one since 20: 12 s
    assert (window.seconds, window.requests, window.errors) == (12.0, 26, 2)
    assert window.requests_per_s == pytest.approx(26 / 12)
    assert sum(window.latency) == 2 and window.status[2] == 2
    empty = BackendStats(now=50.0).window(span=10.0, now=50.0, requests=0, errors=0)
    assert empty.requests_per_s == 0.0 and empty.errors_per_s == 0.0


def test_state_since_changes_only_with_the_state() -> None:
    stats = BackendStats(now=10.0)
    stats.observe_state("up", 12.0)
    assert stats.since == 10.0  # first sight: up since the backend was created
    stats.observe_state("up", 20.0)
    stats.observe_state("down", 21.0)
    stats.observe_state("down", 30.0)
    assert (stats.state, stats.since) == ("down", 21.0)


def test_bucket_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="buckets must be at least 1, got 0"):
        BackendStats(buckets=0)


# -- check results, classified -----------------------------------------------------------------


def _connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="127.0.0.1", port=9, ssl=True)
    return aiohttp.ClientConnectorError(key, os_error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("err", "code", "reason"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), "L4TOUT", ""),
        (aiohttp.SocketTimeoutError("read"), "L7TOUT", ""),
        (TimeoutError(), "L7TOUT", ""),
        (
            _connector_error(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")),
            "L4CON",
            "connection refused",
        ),
        (_connector_error(OSError(errno.EHOSTUNREACH, "x")), "L4CON", "no route to host"),
        (_connector_error(OSError("Multiple exceptions")), "L4CON", "connect failed"),
        (aiohttp.ServerDisconnectedError(), "L7RSP", "server disconnected"),
        (aiohttp.ClientPayloadError("cut"), "L7RSP", "broken body"),
        (aiohttp.ClientResponseError(None, ()), "L7RSP", "malformed response"),  # type: ignore[arg-type]
        (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), "L7RSP", "connection reset by peer"),
        (aiohttp.ClientError("other"), "L7RSP", "ClientError"),
    ],
)
def test_classify_error(err: BaseException, code: str, reason: str) -> None:
    assert classify_error(err) == (code, reason)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, (True, "L7OK", "200")),
        (302, (True, "L7OK", "302")),
        (404, (False, "L7STS", "404")),
        (503, (False, "L7STS", "503")),
        (101, (False, "L7STS", "101")),
    ],
)
def test_classify_status(status: int, expected: tuple[bool, str, str]) -> None:
    assert classify_status(status) == expected


def test_summary_reads_like_haproxy() -> None:
    assert ProbeResult(False, 0, "x", "L4CON", "connection refused", 0.0004).summary == (
        "L4CON connection refused in 0ms"
    )
    assert ProbeResult(False, 0, "x", "L7TOUT", "", 0.5).summary == "L7TOUT in 500ms"
    assert ProbeResult(True, 0, "200").summary == "ok in 0ms"  # made without a code


# -- the probes produce those results ----------------------------------------------------------


class _Sink:
    def set_health(self, name: str, state: HealthState) -> None:
        pass


async def _first_result(url: str, *, check_timeout: float = 0.3) -> ProbeResult:
    results: list[ProbeResult] = []
    done = asyncio.Event()

    def record(name: str, state: RiseFall, result: ProbeResult) -> None:
        results.append(result)
        done.set()

    settings = HealthSettings(interval=0.05, timeout=check_timeout, rise=1, fall=1)
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(session=session, sink=_Sink(), settings=settings, on_result=record)
        monitor.update([ProbeTarget("a", url)], settings, initial={})
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            await monitor.close()
    return results[0]


RawServer = Callable[[bytes], Awaitable[str]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    """A TCP server on 127.0.0.1 that answers every connection with fixed bytes (b"" for
    silence: it reads and never answers)."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            if answer:
                writer.write(answer)
                await writer.drain()
                writer.close()
            else:
                await asyncio.sleep(5)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def test_probe_results_are_classified(
    backends: BackendFactory, raw_server: RawServer
) -> None:
    up = await backends("up")
    ok = await _first_result(up.url)
    assert (ok.ok, ok.code, ok.reason, ok.detail) == (True, "L7OK", "200", "200")
    assert ok.duration > 0 and ok.summary.startswith("L7OK 200 in ")

    up.healthy = False
    failing = await _first_result(up.url)
    assert (failing.ok, failing.code, failing.reason) == (False, "L7STS", "503")

    gone = await backends("gone")
    await gone.stop()
    refused = await _first_result(gone.url)
    assert (refused.code, refused.reason) == ("L4CON", "connection refused")
    assert refused.summary.startswith("L4CON connection refused in ")
    assert refused.detail.startswith("ClientConnectorError")  # raw text kept as detail

    silent = await _first_result(await raw_server(b""), check_timeout=0.2)
    assert (silent.code, silent.detail) == ("L7TOUT", "timeout after 0.2s")
    assert silent.summary.startswith("L7TOUT in ")

    garbage = await _first_result(await raw_server(b"SSH-2.0-OpenSSH_9.2\r\n"))
    assert (garbage.ok, garbage.code) == (False, "L7RSP")

    closed = await _first_result(
        await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
    )
    assert (closed.ok, closed.code, closed.reason) == (False, "L7RSP", "broken body")
