"""Replacing the proxy process under load loses no request (``lbrec proxy --handoff PATH``).

Real processes on loopback: a bounded load (keep-alive clients) runs while a new proxy process
takes the listening sockets over from the running one, again and again; every request must
succeed, and each old process must exit by itself after draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from lbrec.proxy.handoff import HandoffServer, take_over
from tests.proxy.conftest import BackendFactory, config_doc, write_config
from tests.proxy.test_process import _free_port

_ROOT = Path(__file__).parents[2]
RESTARTS = 4
CLIENTS = 6


async def _hand_over(
    procs: list[subprocess.Popen[bytes]], config: Path, handoff: Path, log: Path
) -> None:
    """Start the next process on ``handoff``: the old one exits by itself (0) once the new
    one has taken over and it drained."""
    old = procs[-1]
    procs.append(_start(config, handoff, log))
    deadline = time.monotonic() + 20
    while old.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert old.returncode == 0, log.read_text()[-2000:]  # noqa: ASYNC240  (a failure only)


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
            await _hand_over(procs, config, handoff, log)
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


def _serve_handoff(path: Path, sockets: list[socket.socket]) -> HandoffServer:
    server = HandoffServer(path, sockets, on_taken=lambda: None)
    server.start()
    return server


def test_the_handoff_socket_is_private_to_its_user(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = _serve_handoff(tmp_path / "h.sock", [listener])
    try:
        assert stat.S_IMODE((tmp_path / "h.sock").stat().st_mode) == 0o600
    finally:
        server.close()
        listener.close()


@pytest.mark.parametrize("kind", ["udp", "connected"])
def test_only_listening_tcp_sockets_are_taken(tmp_path: Path, kind: str) -> None:
    if kind == "udp":
        odd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        odd.bind(("127.0.0.1", 0))
        extra: list[socket.socket] = []
    else:
        peer = socket.create_server(("127.0.0.1", 0))
        odd = socket.create_connection(peer.getsockname())
        extra = [peer]
    server = _serve_handoff(tmp_path / "h.sock", [odd])
    try:
        with pytest.raises(OSError, match="not"):
            take_over(tmp_path / "h.sock", timeout=5)
    finally:
        server.close()
        for sock in [odd, *extra]:
            sock.close()


def test_another_users_process_gets_no_sockets(tmp_path: Path) -> None:
    """SO_PEERCRED: even if the socket file were reachable, another uid is refused."""
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("this test runs as root with util-linux's setpriv (as CI does)")
    listener = socket.create_server(("127.0.0.1", 0))
    shared = Path(tempfile.mkdtemp(prefix="lbrec-handoff-"))  # pytest's tmp is root-only
    shared.chmod(0o755)
    path = shared / "h.sock"
    server = _serve_handoff(path, [listener])
    try:
        path.chmod(0o666)  # as if the file mode had been loosened
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)\n"
            f"s.connect({str(path)!r})\n"
            "try:  # refused: the proxy may close before the request is even sent\n"
            "    s.sendall(b'TAKE\\n')\n"
            "    _, fds, _, _ = socket.recv_fds(s, 64, 4)\n"
            "except OSError:\n"
            "    fds = []\n"
            "print(len(fds))\n"
        )
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-I",
                "-c",
                probe,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.stdout.strip() == "0", (done.stdout, done.stderr)
        # The rightful successor still gets them.
        taken = take_over(path, timeout=5)
        assert taken is not None and len(taken.sockets) == 1
        for sock in taken.sockets:
            sock.close()
        taken.ready()
    finally:
        server.close()
        listener.close()
        shutil.rmtree(shared, ignore_errors=True)
