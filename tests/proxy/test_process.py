"""The proxy as a real process (``python -m proxy``): SIGTERM drain, SIGHUP, memory, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbrec.proxy.cli import main
from tests.proxy.conftest import BackendFactory, config_doc, write_config

_ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyProcess:
    def __init__(self, path: Path, doc: dict[str, Any], *extra: str) -> None:
        self.port, self.admin_port = _free_port(), _free_port()
        doc = dict(doc, listen=f"127.0.0.1:{self.port}", admin=f"127.0.0.1:{self.admin_port}")
        self.path = path
        write_config(path, doc)
        self.log = path.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = self._popen(path, log, extra)

    @staticmethod
    def _popen(path: Path, log: Any, extra: tuple[str, ...]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--config",
                str(path),
                "--log-format",
                "json",
                "--drain-timeout",
                "10",
                *extra,
            ],
            cwd=_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.admin_url + "/-/healthz") as response:
                    if response.status == 200:
                        return
            assert self.proc.poll() is None, self.log.read_text()
            await asyncio.sleep(0.05)
        raise AssertionError("proxy did not start: " + self.log.read_text())

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    procs: list[ProxyProcess] = []

    def start(doc: dict[str, Any], *extra: str) -> ProxyProcess:
        proc = ProxyProcess(tmp_path / "backends.json", doc, *extra)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def test_sigterm_drains_in_flight(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)]))
    await proxy.wait_ready(http)
    in_flight = asyncio.create_task(http.get(proxy.url + "/slow?s=1.0"))
    await asyncio.sleep(0.3)
    proxy.proc.send_signal(signal.SIGTERM)
    response = await in_flight
    assert response.status == 200
    assert await response.text() == "late"
    response.release()
    assert await asyncio.to_thread(proxy.proc.wait, 10) == 0
    with pytest.raises(aiohttp.ClientError):  # no longer accepting
        async with http.get(proxy.url + "/x"):
            pass
    events = [json.loads(line)["event"] for line in proxy.log.read_text().splitlines()]
    assert events[-2:] == ["stopping", "stopped"]


async def test_sighup_reload_and_json_logs(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)], generation="one"))
    await proxy.wait_ready(http)
    proxy.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        async with http.get(proxy.admin_url + "/-/pool") as response:
            if (await response.json())["reloads"] >= 1:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("SIGHUP did not reload")
    proxy.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proxy.proc.wait, 10) == 0
    lines = [json.loads(line) for line in proxy.log.read_text().splitlines()]
    assert {"start", "reload", "stopped"} <= {line.get("event") for line in lines}
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)


async def test_large_upload_and_download_bounded_memory(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    """200 MB up through the proxy (streamed, never buffered) with bounded proxy RSS."""
    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)]))
    await proxy.wait_ready(http)
    async with http.get(proxy.url + "/warm") as response:
        assert response.status == 200
    before = proxy.rss_peak_kib()
    block = os.urandom(1 << 20)
    total = 200

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total):
            yield block

    headers = {"Content-Length": str(total << 20)}
    async with http.post(proxy.url + "/upload", data=body(), headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["size"] == total << 20
    growth_mib = (proxy.rss_peak_kib() - before) / 1024
    assert growth_mib < 40, f"proxy RSS grew by {growth_mib:.0f} MiB for a 200 MiB body"
    received = 0
    async with http.get(proxy.url + "/big?mib=100") as response:
        async for data in response.content.iter_chunked(1 << 16):
            received += len(data)
    assert received == 100 << 20
    growth_mib = (proxy.rss_peak_kib() - before) / 1024
    assert growth_mib < 40, f"proxy RSS grew by {growth_mib:.0f} MiB for a 100 MiB answer"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() configures logging for the process; undo it for the tests that follow."""
    names = ["", "lbrec", "lbrec.proxy.access", "watchdog"]
    saved = [
        (
            logging.getLogger(n),
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
        )
        for n in names
    ]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_cli_bad_config_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "backends.json"
    path.write_text("{not json")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "backends.json: line 1" in err and "hint:" in err
    assert main(["--config", str(path), "--workers", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--listen", "nonsense"])


async def test_slow_reader_backpressure(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    """A client that stops reading pauses the backend: the proxy does not buffer the answer."""
    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)]))
    await proxy.wait_ready(http)
    async with http.get(proxy.url + "/warm") as response:
        assert response.status == 200
    before = proxy.rss_peak_kib()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /big?mib=200 HTTP/1.1\r\nHost: t\r\n\r\n")
    await reader.readexactly(65536)
    await asyncio.sleep(1.0)  # the backend could push 200 MiB in this time
    growth_mib = (proxy.rss_peak_kib() - before) / 1024
    writer.close()
    await writer.wait_closed()
    assert growth_mib < 40, f"proxy buffered {growth_mib:.0f} MiB for a client that reads nothing"


async def test_slow_backend_reader_backpressure(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    """A backend that does not read the body pauses reading from the client."""
    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)]))
    await proxy.wait_ready(http)
    async with http.get(proxy.url + "/warm") as response:
        assert response.status == 200
    before = proxy.rss_peak_kib()
    block = b"u" * (1 << 20)
    total = 150

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total):
            yield block

    headers = {"Content-Length": str(total << 20)}
    upload = asyncio.create_task(http.post(proxy.url + "/lazy?s=1.0", data=body(), headers=headers))
    await asyncio.sleep(0.9)
    growth_mib = (proxy.rss_peak_kib() - before) / 1024
    response = await upload
    assert response.status == 200 and (await response.json())["size"] == total << 20
    response.release()
    assert growth_mib < 40, f"proxy buffered {growth_mib:.0f} MiB of an unread request body"


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text().lower()


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


async def test_workers_are_restarted_when_one_dies(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)]), "--workers", "2")
    await proxy.wait_ready(http)
    for _ in range(100):
        if len(_children(proxy.proc.pid)) == 2:
            break
        await asyncio.sleep(0.05)
    first = _children(proxy.proc.pid)
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    for _ in range(200):
        now = _children(proxy.proc.pid)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.05)
    now = _children(proxy.proc.pid)
    assert len(now) == 2 and victim not in now, proxy.log.read_text()
    await proxy.wait_ready(http)
    for _ in range(20):
        async with http.get(proxy.url + "/") as response:
            assert response.status == 200
    assert "worker_restart" in proxy.log.read_text()
    proxy.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proxy.proc.wait, 20) == 0
    assert all(_gone(pid) for pid in now)


async def test_metrics_cover_every_worker(
    backends: BackendFactory, spawn: Any, http: aiohttp.ClientSession
) -> None:
    """--workers 2: the admin worker's /metrics holds each worker's counters under its own
    `worker` label; summed, they are every request the listener took."""
    from prometheus_client.parser import text_string_to_metric_families

    a = await backends("a")
    proxy = spawn(config_doc([("a", a.url, 1)]), "--workers", "2")
    await proxy.wait_ready(http)
    total = 60
    for _ in range(total):  # a new connection each: the kernel spreads them over the workers
        async with aiohttp.ClientSession() as fresh, fresh.get(proxy.url + "/x") as response:
            assert response.status == 200
    per_worker: dict[str, float] = {}
    workers = 0.0
    for _ in range(100):  # the other worker publishes its figures every second
        async with http.get(proxy.admin_url + "/metrics") as response:
            text = await response.text()
        per_worker = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "lbrec_proxy_backend_requests_total":
                    per_worker[s.labels["worker"]] = s.value
                elif s.name == "lbrec_proxy_workers":
                    workers = s.value
        if sum(per_worker.values()) == total:
            break
        await asyncio.sleep(0.1)
    assert workers == 2 and sum(per_worker.values()) == total, per_worker
    assert set(per_worker) == {"0", "1"} and all(per_worker.values()), per_worker
    proxy.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proxy.proc.wait, 20) == 0


def test_version_names_the_event_loop_and_parser() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--version"],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = result.stdout.strip()
    assert re.fullmatch(
        r"lbrec proxy \S+ \(event loop (uvloop \S+|asyncio .*), parser httptools \S+ \(llhttp\), "
        r"(mypyc|interpreted), Python \S+\)",
        line,
    ), line
