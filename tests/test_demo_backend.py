"""The demo backend (backend/app.py), as a real process on loopback."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).parents[1]


@pytest.fixture
def demo() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PORT=str(port), BACKEND_NAME="demo1")
    proc = subprocess.Popen(
        [sys.executable, str(_ROOT / "backend" / "app.py")], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, proc
    proc.terminate()
    proc.wait(10)


def test_keep_alive_without_nagle(
    demo: tuple[int, subprocess.Popen[bytes]],
) -> None:
    """Nagle's algorithm is off (head and body are two writes; with Nagle and delayed ACKs each
    keep-alive answer after the first waited 40 ms): the option, and answers on one connection."""
    sys.path.insert(0, str(_ROOT / "backend"))
    try:
        import app  # type: ignore[import-not-found]  # the demo backend's module

        assert app.Handler.disable_nagle_algorithm is True
    finally:
        sys.path.remove(str(_ROOT / "backend"))
    port, _ = demo
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(20):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b"Hello from demo1\n"
        assert response.getheader("X-Backend") == "demo1"
    conn.close()
