"""Replacing the proxy process under load loses no request (``lbrec proxy --handoff PATH``).

Real processes on loopback: a bounded load (keep-alive clients) runs while a new proxy process
takes the listening sockets over from the running one, again and again; every request must
succeed, and each old process must exit by itself after draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.proxy.conftest import BackendFactory, config_doc, write_config
from tests.proxy.test_process import _free_port

_ROOT = Path(__file__).parents[2]
RESTARTS = 4
CLIENTS = 6


def _start(config: Path, handoff: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--config",
                str(config),
                "--handoff",
                str(handoff),
                "--drain-timeout",
                "5",
                "--log-format",
                "json",
            ],
            cwd=_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )


async def _wait_serving(url: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/-/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


async def test_restart_under_load_loses_no_request(
    backends: BackendFactory, tmp_path: Path
) -> None:
    a = await backends("a")
    port, admin_port = _free_port(), _free_port()
    config = tmp_path / "backends.json"
    doc = config_doc([("a", a.url, 1)])
    write_config(config, dict(doc, listen=f"127.0.0.1:{port}", admin=f"127.0.0.1:{admin_port}"))
    handoff = tmp_path / "proxy.sock"
    log = tmp_path / "proxy.log"
    procs = [_start(config, handoff, log)]
    await _wait_serving(f"http://127.0.0.1:{admin_port}")
    url = f"http://127.0.0.1:{port}/x"
    results = {"ok": 0, "failed": 0}
    errors: list[str] = []
    stop = asyncio.Event()

    async def client() -> None:
        async with aiohttp.ClientSession() as session:  # keep-alive connections
            for _ in range(20_000):  # bounded in count, and in time by ``stop``
                if stop.is_set():
                    return
                try:  # POST: aiohttp never retries it, so any dropped connection shows
                    async with session.post(url, data=b"payload") as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError as err:
                    ok = False
                    errors.append(repr(err))
                results["ok" if ok else "failed"] += 1

    load = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        for _ in range(RESTARTS):
            await asyncio.sleep(0.7)
            old = procs[-1]
            procs.append(_start(config, handoff, log))
            # The old process exits by itself once the new one has taken over and it drained.
            deadline = time.monotonic() + 20
            while old.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert old.returncode == 0, log.read_text()[-2000:]
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    assert results["failed"] == 0, (results, errors[:5])
    assert results["ok"] > 100, results
    assert "taken over by the new proxy" in log.read_text()
