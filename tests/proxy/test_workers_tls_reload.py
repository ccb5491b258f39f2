"""Issue 22: certificates hot-reload with ``lbrec proxy --workers 2`` too. Under a bounded load of
new TLS connections (each a full handshake, so the kernel spreads them over both workers'
SO_REUSEPORT listeners), a renewal written as the ACME store writes one (a new file, then
backends.json replaced): no connection fails, and afterwards every worker serves the new
certificate."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from tests.proxy.conftest import BackendFactory, config_doc, write_config
from tests.proxy.test_process import http, spawn  # noqa: F401  (fixtures)
from tests.support.certs import CertAuthority

pytestmark = pytest.mark.slow

NAME = "a.example"
SECONDS = 6.0  # of load: every loop below stops then


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one(port: int, context: ssl.SSLContext) -> tuple[str, int]:
    """A new TLS connection (SNI ``NAME``), one GET: (the certificate's serial, status)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(f"GET /x HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
    return serial, int(answer.split(b" ", 2)[1])


class _Load:
    """Two threads of new TLS connections until ``stop`` (bounded: SECONDS, 20,000 at most)."""

    def __init__(self, port: int, ca: CertAuthority) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca.pem))
        self.seen: Counter[str] = Counter()
        self.serials: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        deadline = time.monotonic() + SECONDS + 10
        for _ in range(10_000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                serial, status = _one(self.port, self.context)
                outcome = f"status {status}"
            except (OSError, ssl.SSLError, AssertionError) as err:
                serial, outcome = "", f"error {type(err).__name__}: {err}"
            with self.lock:
                self.seen[outcome] += 1
                if serial:
                    self.serials.append((time.monotonic(), serial))


async def test_a_renewal_reaches_every_worker_and_fails_no_new_connection(
    backends: BackendFactory,
    spawn: Any,  # noqa: F811  (test_process.py's fixture)
    http: aiohttp.ClientSession,  # noqa: F811
    tmp_path: Path,
) -> None:
    ca = CertAuthority(tmp_path / "pki")
    web = await backends("web")
    old_cert, old_key = ca.leaf("old", [NAME])
    tls_port = _free_port()
    doc = config_doc([("web", web.url, 1)])
    doc["tls"] = {
        "listen": f"127.0.0.1:{tls_port}",
        "certificates": [{"cert": str(old_cert), "key": str(old_key)}],
    }
    proxy = spawn(doc, "--workers", "2")
    await proxy.wait_ready(http)
    load = _Load(tls_port, ca)
    # until both workers listen on the TLS port (each binds it on its own, SO_REUSEPORT)
    for _ in range(200):
        with contextlib.suppress(OSError, ssl.SSLError):
            # in a thread: the backends answer on this test's event loop
            if (await asyncio.to_thread(_one, tls_port, load.context))[1] == 200:
                break
        await asyncio.sleep(0.05)
    old_serial = (await asyncio.to_thread(_one, tls_port, load.context))[0]

    for thread in load.threads:
        thread.start()
    try:
        await asyncio.sleep(SECONDS / 3)
        new_cert, new_key = ca.leaf("new", [NAME])
        renewed = dict(doc, listen=f"127.0.0.1:{proxy.port}", admin=f"127.0.0.1:{proxy.admin_port}")
        renewed["tls"] = dict(
            doc["tls"], certificates=[{"cert": str(new_cert), "key": str(new_key)}]
        )
        renewed_at = time.monotonic()
        write_config(proxy.path, renewed)  # atomically, as a pass does
        await asyncio.sleep(SECONDS * 2 / 3)
    finally:
        load.stop.set()
        for thread in load.threads:
            await asyncio.to_thread(thread.join)
    after: Counter[str] = Counter()
    for _ in range(40):
        after[(await asyncio.to_thread(_one, tls_port, load.context))[0]] += 1
    print(f"\n--workers 2, a renewal under new TLS connections: {dict(load.seen)}")
    print(f"serials after: {dict(after)} (old {old_serial})")
    assert set(load.seen) == {"status 200"}, load.seen
    assert load.seen["status 200"] > 50
    assert old_serial not in after and len(after) == 1  # both workers serve the new one
    # both workers took TLS connections (each counts under its own label; published every 1 s)
    per_worker: dict[str, float] = {}
    for _ in range(60):
        async with http.get(proxy.admin_url + "/metrics") as response:
            text = await response.text()
        per_worker = {
            line.split('worker="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("lbrec_proxy_backend_requests_total{")
        }
        if len(per_worker) == 2 and min(per_worker.values()) > 20:
            break
        await asyncio.sleep(0.1)
    assert set(per_worker) == {"0", "1"} and min(per_worker.values()) > 20, per_worker
    settled = [t for t, s in load.serials if s == old_serial]
    assert max(settled) - renewed_at < SECONDS * 2 / 3  # the old one left during the load
