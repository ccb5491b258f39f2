"""The rise/fall state machine and the probe loop against real servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from lbrec.proxy.config import HealthSettings
from lbrec.proxy.health import HealthMonitor
from lbrec.proxy.health_state import (
    FAST_INTERVAL,
    HealthState,
    ProbeTarget,
    RiseFall,
    next_probe_delay,
)
from tests.proxy.conftest import BackendFactory

UP, DOWN, CHECKING = HealthState.UP, HealthState.DOWN, HealthState.CHECKING


@pytest.mark.parametrize(
    ("rise", "fall", "start", "results", "states"),
    [
        (2, 3, CHECKING, "++", [CHECKING, UP]),
        (2, 3, CHECKING, "---", [CHECKING, CHECKING, DOWN]),
        (2, 3, UP, "--+--", [UP, UP, UP, UP, UP]),
        (2, 3, UP, "---", [UP, UP, DOWN]),
        (2, 3, DOWN, "+-++", [DOWN, DOWN, DOWN, UP]),
        (1, 1, UP, "-+-", [DOWN, UP, DOWN]),
        (3, 2, DOWN, "++-+++", [DOWN, DOWN, DOWN, DOWN, DOWN, UP]),
    ],
)
def test_rise_fall(
    rise: int, fall: int, start: HealthState, results: str, states: list[HealthState]
) -> None:
    machine = RiseFall(rise, fall, state=start)
    seen = []
    for char in results:
        machine = machine.observe(char == "+")
        seen.append(machine.state)
    assert seen == states


def test_rise_fall_is_a_value() -> None:
    machine = RiseFall(2, 2)
    after = machine.observe(True)
    assert machine.successes == 0 and after.successes == 1
    assert after.with_thresholds(rise=1, fall=1).rise == 1


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, HealthState]] = []
        self.changed = asyncio.Event()

    def set_health(self, name: str, state: HealthState) -> None:
        self.events.append((name, state))
        self.changed.set()


async def test_probes_mark_down_and_up(backends: BackendFactory) -> None:
    backend = await backends("a")
    sink = _Sink()
    settings = HealthSettings(interval=0.05, timeout=0.5, rise=2, fall=2)
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(session=session, sink=sink, settings=settings)
        monitor.update([ProbeTarget("a", backend.url)], settings, initial={"a": UP})
        backend.healthy = False
        await asyncio.wait_for(sink.changed.wait(), 3)
        assert sink.events == [("a", DOWN)]
        sink.changed.clear()
        backend.healthy = True
        await asyncio.wait_for(sink.changed.wait(), 3)
        assert sink.events[-1] == ("a", UP)
        await monitor.close()


async def test_probe_timeout_and_refused_count_as_failures(backends: BackendFactory) -> None:
    backend = await backends("a")
    await backend.stop()  # nothing listens there now
    sink = _Sink()
    settings = HealthSettings(interval=0.05, timeout=0.2, rise=1, fall=1)
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(session=session, sink=sink, settings=settings)
        monitor.update([ProbeTarget("a", backend.url)], settings, initial={})
        await asyncio.wait_for(sink.changed.wait(), 3)
        assert sink.events == [("a", DOWN)]
        state = monitor.state_of("a")
        assert state is not None and state.failures >= 1
        monitor.update([], settings, initial={})  # removal cancels the probe task
        assert monitor.state_of("a") is None
        await monitor.close()


@pytest.mark.parametrize(
    ("state", "fast"),
    [
        (RiseFall(2, 3, state=CHECKING), True),  # new backend: settle quickly
        (RiseFall(2, 3, state=UP), False),
        (RiseFall(2, 3, state=UP, failures=1), True),  # up but failing: confirm quickly
        (RiseFall(2, 3, state=DOWN), False),
        (RiseFall(2, 3, state=DOWN, successes=1), True),  # down but answering again
    ],
)
def test_probe_interval_is_fast_only_while_the_state_settles(state: RiseFall, fast: bool) -> None:
    settings = HealthSettings(interval=5.0)
    assert next_probe_delay(state, settings) == (FAST_INTERVAL if fast else 5.0)
    assert next_probe_delay(state, HealthSettings(interval=0.1)) == 0.1


class _HugeBodyServer:
    """A raw HTTP server on 127.0.0.1 whose /health answers 200 and then streams a body that
    never ends (bounded in time): it counts the bytes it managed to hand to the kernel and the
    connections it accepted."""

    CHUNK = 64 * 1024

    def __init__(self, framing: str, *, for_s: float = 8.0) -> None:
        self.framing = framing
        self.for_s = for_s
        self.sent = 0
        self.connections = 0
        self.done = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        loop = asyncio.get_running_loop()
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\n"
            if self.framing == "length":
                head += b"Content-Length: 100000000000\r\n"
            elif self.framing == "chunked":
                head += b"Transfer-Encoding: chunked\r\n"
            else:  # "close": the body ends when the connection does
                head += b"Connection: close\r\n"
            writer.write(head + b"\r\n")
            chunk = b"x" * self.CHUNK
            if self.framing == "chunked":
                chunk = f"{self.CHUNK:x}\r\n".encode() + chunk + b"\r\n"
            deadline = loop.time() + self.for_s
            while loop.time() < deadline and not writer.is_closing():
                writer.write(chunk)
                await writer.drain()
                self.sent += len(chunk)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the prober hung up: what a fixed probe does
        finally:
            writer.close()
            self.done.set()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_probe_reads_a_capped_body_and_judges_the_status(framing: str) -> None:
    """Issue 20 finding 5: a backend whose /health streams an endless body took the proxy's
    memory up with it (the probe read the whole body until health.timeout). The probe now
    reads at most HEALTH_BODY_CAP bytes, judges the status and hangs up."""
    server = _HugeBodyServer(framing)
    await server.start()
    settings = HealthSettings(interval=60.0, timeout=6.0, rise=1, fall=1)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True), auto_decompress=False
        ) as session:
            monitor = HealthMonitor(session=session, sink=_Sink(), settings=settings)
            result = await asyncio.wait_for(
                monitor._probe(ProbeTarget("a", server.url), settings), 20
            )
            # The buggy probe read for the whole 6 s and failed with L7TOUT.
            assert result.ok, result.summary
            assert (result.code, result.reason) == ("L7OK", "200")
            assert result.duration < 3.0, result.summary
            # The connection is closed: the server's writes fail soon after the probe returns.
            await asyncio.wait_for(server.done.wait(), 5)
            # What the server could push is the cap plus the kernel's socket buffers (a few
            # MiB on loopback), not the hundreds of MiB the unbounded read took.
            assert server.sent < 48 * 1024 * 1024, server.sent
    finally:
        await server.stop()


async def test_probe_of_a_small_body_still_reads_it_whole(backends: BackendFactory) -> None:
    """The cap leaves the ordinary case alone: a short health body is read to its end."""
    backend = await backends("a")
    settings = HealthSettings(interval=60.0, timeout=2.0)
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(session=session, sink=_Sink(), settings=settings)
        result = await monitor._probe(ProbeTarget("a", backend.url), settings)
        assert (result.ok, result.code, result.reason) == (True, "L7OK", "200")
        backend.healthy = False
        result = await monitor._probe(ProbeTarget("a", backend.url), settings)
        assert (result.ok, result.code, result.reason) == (False, "L7STS", "503")


def test_the_pool_imports_no_client_library() -> None:
    """The compiled pool needs the rise/fall state only, never aiohttp (the probes)."""
    code = "import sys, lbrec.proxy.pool; sys.exit('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
