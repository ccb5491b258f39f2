"""Issue 22 end to end: Pebble (Debian's, tests/support/pebble.py) validates through the REAL
proxy. The proxy (``serve``, in this test's event loop) listens on Pebble's ``httpPort`` and
``tlsPort`` of 127.0.0.1, real backends behind it; the real certificate manager (its own thread,
as ``lbrec up`` runs it) orders; a pass (render_pool, as the control loop's) puts what it stored
into backends.json when the manager notifies; curl (HTTP/1.1 and HTTP/2, ``--cacert`` Pebble's
root) sees the certificates served.

Proven: two hosts certified by HTTP-01 (the plain listener answers the challenge, before any
redirect) and by TLS-ALPN-01 (the TLS listener's ClientHello peek); a renewal (the clock
injected past two thirds) under a bounded HTTPS load over h1 and h2 with 0 failed requests, the
new certificate served on new connections; Pebble down: the renewal fails with why, nothing
serving is touched, the load still sees 0 failures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lbrec.proxy.app import ServeInfo, ServeOptions, serve
from lbrec.reconciler.adapters.acme import AcmeClient
from lbrec.reconciler.adapters.cert_store import read_held, read_records
from lbrec.reconciler.adapters.files import atomic_write
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.certs import RenewalPolicy, renewal_time
from lbrec.reconciler.core.render import render_pool
from lbrec.reconciler.runtime.certs import CertManager, CertMetrics
from tests.support.pebble import Pebble, free_port, have_pebble, running_pebble

from .conftest import Backend, BackendFactory

# Skipped on a machine without Debian's pebble, never in CI (scripts/setup.sh installs it).
pytestmark = [
    pytest.mark.skipif(
        not have_pebble() and os.environ.get("CI") != "true",
        reason="Debian's pebble is not installed (scripts/setup.sh installs it)",
    ),
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

T0 = time.monotonic()
HOSTS = ("shop.example.com", "api.example.com")


def _spec(pebble: Pebble, admin: int, challenge: str) -> str:
    return (
        f"listen: 127.0.0.1:{pebble.http_port}\nadmin: 127.0.0.1:{admin}\n"
        f"tls:\n  listen: 127.0.0.1:{pebble.tls_port}\n  hsts: 1d\n"
        "  acme:\n    email: ops@example.com\n"
        f"    directory: {pebble.directory}\n"
        f"    ca_bundle: {pebble.ca_bundle}\n    challenge: {challenge}\n"
        "routes:\n"
        "  - {host: shop.example.com, backends: [web]}\n"
        "  - {host: shop.example.com, path: /api/, backends: [api]}\n"
        "  - {host: api.example.com, backends: [api]}\n"
        "backends:\n  - {name: web, port: 8000}\n  - {name: api, port: 8100}\n"
    )


@dataclass
class FrontDoor:
    """A deploy folder, the real proxy serving its backends.json, the real manager."""

    folder: Path
    pebble: Pebble
    manager: CertManager
    now: list[dt.datetime]
    info: ServeInfo
    root: Path  # Pebble's root: what a client trusts
    passes: int = 0
    notified: list[str] = field(default_factory=list)

    @property
    def workspace(self) -> Workspace:
        return self.manager.workspace

    @property
    def tls_port(self) -> int:
        return self.pebble.tls_port

    def served_serial(self, name: str) -> str:
        """What the TLS listener presents for ``name`` on a new connection (blocking)."""
        from cryptography import x509

        context = ssl.create_default_context(cafile=str(self.root))
        with (
            socket.create_connection(("127.0.0.1", self.tls_port), 5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return format(x509.load_der_x509_certificate(der).serial_number, "x")

    async def serving(self, names: dict[str, str], within: float = 10.0) -> None:
        """Wait until the listener presents the serial ``names[name]`` for each name."""
        deadline = time.monotonic() + within
        while True:
            seen = {}
            for name in names:
                try:
                    seen[name] = await asyncio.to_thread(self.served_serial, name)
                except (OSError, ssl.SSLError) as err:
                    seen[name] = repr(err)
            if seen == names:
                return
            assert time.monotonic() < deadline, (seen, names)
            await asyncio.sleep(0.1)


def _pass(workspace: Workspace, web: Backend, api: Backend) -> None:
    """What a pass does: observe .lbrec/certs, render the pool with the instances, write it
    (the proxy's watcher reloads it)."""
    desired = workspace.load()
    observed = workspace.observe(())
    pool = render_pool(
        desired,
        instances={"web": [(web.url, "web-1")], "api": [(api.url, "api-1")]},
        certificates=observed.certificates,
    )
    atomic_write(workspace.pool_file, pool.to_json())


def _curl(door: FrontDoor, version: str, urls: list[str]) -> list[str]:
    """One curl run over ``urls`` (one connection per host, kept alive): per URL
    ``<code> <http version> <x-backend>``; a curl failure is one line ``curl <exit>: <err>``."""
    port = door.tls_port
    try:
        out = subprocess.run(
            [
                "curl",
                "-sS",
                version,
                "--max-time",
                "10",
                "--cacert",
                str(door.root),
                *(a for h in HOSTS for a in ("--resolve", f"{h}:{port}:127.0.0.1")),
                "-w",
                "%{http_code} %{http_version} %header{x-backend} %{time_total}\\n",
                *(a for u in urls for a in ("-o", "/dev/null", f"https://{u}")),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        return [f"timeout: {err.stdout!r} {err.stderr!r}"]
    lines = out.stdout.splitlines()
    if out.returncode != 0:
        lines.append(f"curl {out.returncode}: {out.stderr.strip()}")
    return lines


def _urls(port: int) -> list[str]:
    return [
        f"shop.example.com:{port}/",
        f"shop.example.com:{port}/api/orders",
        f"api.example.com:{port}/v1",
    ]


@pytest.fixture
async def door_factory(
    tmp_path: Path, backends: BackendFactory
) -> AsyncIterator[Callable[[str], Awaitable[FrontDoor]]]:
    stack: list[tuple[FrontDoor, asyncio.Event, asyncio.Task[None], asyncio.Task[None]]] = []
    pebbles: list[object] = []

    async def make(challenge: str) -> FrontDoor:
        web, api = await backends("web"), await backends("api")
        http_port, tls_port, admin = free_port(), free_port(), free_port()
        context = running_pebble(tmp_path / "pebble", http_port=http_port, tls_port=tls_port)
        pebble = context.__enter__()
        pebbles.append(context)
        folder = tmp_path / "deploy"
        folder.mkdir()
        workspace = Workspace.at(folder / "desired-state.yaml")
        atomic_write(workspace.spec_file, _spec(pebble, admin, challenge))
        _pass(workspace, web, api)  # tls.acme_dir in the pool: the proxy answers challenges
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        ready: asyncio.Future[ServeInfo] = loop.create_future()
        task = asyncio.create_task(
            serve(
                workspace.pool_file,
                ServeOptions(drain_timeout=2.0),
                stop=stop,
                ready=ready.set_result,
            )
        )
        info = await asyncio.wait_for(asyncio.shield(ready), 10)
        assert info.tls is not None and info.tls[1] == tls_port

        wanted = asyncio.Event()  # the control loop's notify: a pass at once

        def notify(why: str) -> None:
            door.notified.append(why)
            loop.call_soon_threadsafe(wanted.set)

        async def passes() -> None:
            while True:
                await wanted.wait()
                wanted.clear()
                await asyncio.to_thread(_pass, workspace, web, api)
                door.passes += 1

        now = [dt.datetime.now(dt.UTC)]
        manager = CertManager(
            workspace,
            notify,
            clock=lambda: now[0],
            policy=RenewalPolicy(first_backoff=60.0),
            poll=0.2,
            client_factory=lambda f, s: AcmeClient(f, s, timeout=5, order_timeout=30),
            metrics=CertMetrics(CollectorRegistry()),
        )
        door = FrontDoor(folder, pebble, manager, now, info, root)
        stack.append((door, stop, task, asyncio.create_task(passes())))
        return door

    yield make
    for door, stop, task, passer in stack:
        await asyncio.to_thread(door.manager.stop)
        passer.cancel()
        stop.set()
        await asyncio.wait_for(task, 10)
    for context in pebbles:
        context.__exit__(None, None, None)  # type: ignore[attr-defined]


async def _first_certificates(door: FrontDoor) -> float:
    """Start the manager; the seconds until both hosts answer over HTTPS with a certificate
    a client verifies against Pebble's root."""
    started = time.monotonic()
    door.manager.start()
    deadline = started + 90
    while True:
        held = read_held(door.folder)
        if sorted(held) == sorted(HOSTS):
            try:
                await door.serving({n: held[n].serial for n in HOSTS}, within=0.5)
                break
            except AssertionError:
                pass
        assert time.monotonic() < deadline, (read_records(door.folder), door.pebble.log[-3000:])
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
async def test_two_hosts_certified_through_the_real_proxy(
    door_factory: Callable[[str], Awaitable[FrontDoor]],
    challenge: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lbrec.certs")
    door = await door_factory(challenge)
    # before any certificate: the TLS handshake fails cleanly (no certificate for the name)
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(door.served_serial, HOSTS[0])
    elapsed = await _first_certificates(door)
    print(f"\n{challenge}: both hosts served over HTTPS {elapsed:.1f}s after the manager started")
    issued = [r for r in caplog.records if getattr(r, "event", None) == "certificate_issued"]
    assert sorted(getattr(r, "host", "") for r in issued) == sorted(HOSTS)
    assert {getattr(r, "challenge", None) for r in issued} == {challenge}
    assert door.passes >= 1 and door.notified

    for version, proto in (("--http1.1", "1.1"), ("--http2", "2")):
        lines = await asyncio.to_thread(_curl, door, version, _urls(door.tls_port))
        assert [line.rsplit(" ", 1)[0] for line in lines] == [
            f"200 {proto} web",
            f"200 {proto} api",
            f"200 {proto} api",
        ], lines
    # http:// is redirected to the TLS listener's port
    out = await asyncio.to_thread(
        subprocess.run,
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: shop.example.com",
            f"http://127.0.0.1:{door.pebble.http_port}/a?b=1",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert out.stdout == f"301 https://shop.example.com:{door.tls_port}/a?b=1", out


class _Load:
    """A bounded HTTPS load: one thread per HTTP version running curl over every URL, each
    run a few requests on one kept-alive connection per host; new connections each run."""

    def __init__(self, door: FrontDoor, *, deadline: float = 120.0) -> None:
        self.door = door
        self.deadline = time.monotonic() + deadline
        self.ok = 0
        self.slowest = 0.0  # seconds, the slowest answer (curl's time_total)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(v,), daemon=True)
            for v in ("--http1.1", "--http2")
        ]

    def _run(self, version: str) -> None:
        want = {"1.1" if version == "--http1.1" else "2"}
        urls = _urls(self.door.tls_port) * 3
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            for line in _curl(self.door, version, urls):
                parts = line.split()
                if len(parts) == 4:
                    self.slowest = max(self.slowest, float(parts[3]))
                if len(parts) == 4 and parts[0] == "200" and {parts[1]} == want:
                    self.ok += 1
                else:
                    self.failures.append(f"{version} at {time.monotonic() - T0:.1f}: {line}")

    async def __aenter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop and join the clients without blocking the loop (the proxy runs in it)."""
        self._stop.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 40)


async def test_renewal_under_https_load_and_pebble_down(
    door_factory: Callable[[str], Awaitable[FrontDoor]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lbrec.certs")
    door = await door_factory("http-01")
    await _first_certificates(door)
    before = read_held(door.folder)

    # 1. A renewal under load (by TLS-ALPN-01 this time: the listener under load answers it).
    atomic_write(
        door.workspace.spec_file,
        door.workspace.spec_file.read_text().replace(
            "challenge: http-01", "challenge: tls-alpn-01"
        ),
    )
    async with _Load(door) as load:
        await asyncio.sleep(1.0)
        ok_before = load.ok
        door.now[0] = max(renewal_time(c) for c in before.values()) + dt.timedelta(seconds=1)
        started = time.monotonic()
        door.manager.wake()
        deadline = started + 60
        while True:
            held = read_held(door.folder)
            if any(held[n].serial != before[n].serial for n in HOSTS):
                # the tick planned both; the clock back to now, so that a new certificate
                # (whose jitter may put it before the moved clock) is not due again
                door.now[0] = dt.datetime.now(dt.UTC)
            if all(held[n].serial != before[n].serial for n in HOSTS):
                break
            assert time.monotonic() < deadline, read_records(door.folder)
            await asyncio.sleep(0.1)
        after = {n: held[n].serial for n in HOSTS}
        await door.serving(after)
        renewed_in = time.monotonic() - started
        await asyncio.sleep(1.0)  # and a while on the new certificates
    print(
        f"\nrenewal of two hosts served {renewed_in:.1f}s after it was due; "
        f"{load.ok} requests over h1 and h2 meanwhile, {len(load.failures)} failed, "
        f"slowest {load.slowest * 1000:.0f} ms"
    )
    assert load.failures == []
    assert load.ok > ok_before > 0
    renewed = [r for r in caplog.records if getattr(r, "event", None) == "certificate_issued"]
    assert [getattr(r, "challenge", None) for r in renewed if r.kind == "renew"] == [  # type: ignore[attr-defined]
        "tls-alpn-01",
        "tls-alpn-01",
    ]

    # 2. Pebble down: the next renewal fails with why, the served certificates stay, and the
    # load sees no failure.
    door.pebble.stop()
    held = read_held(door.folder)
    async with _Load(door) as load:
        door.now[0] = max(renewal_time(c) for c in held.values()) + dt.timedelta(seconds=1)
        door.manager.wake()
        deadline = time.monotonic() + 30
        while not all(r.failures >= 1 for r in read_records(door.folder).values()):
            assert time.monotonic() < deadline, read_records(door.folder)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    records = read_records(door.folder)
    assert all("cannot reach the ACME server" in (r.last_error or "") for r in records.values())
    assert read_held(door.folder) == held
    await door.serving(after)
    assert load.failures == [] and load.ok > 0
