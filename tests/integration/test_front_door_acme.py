"""Issue 22's "Done means", as a newcomer does it: `lbrec up` on the real engine with the issue's
sample shape (two backends ``web`` and ``api`` built from the demo Dockerfile.backend; routes
``shop.example.com`` ``/`` and ``/api/``), Debian's Pebble standing in for Let's Encrypt
(``tls.acme.directory`` at Pebble, ``ca_bundle`` its HTTPS root), ``listen`` and ``tls.listen``
on 127.0.0.1 high ports that Pebble validates at (its ``httpPort``/``tlsPort``).

Then ``https://shop.example.com:PORT/`` and ``/api/`` are answered by different backends over
HTTP/2 with a certificate curl verifies against Pebble's root, and ``http://`` is redirected.
Its own Compose project (``t22e-``), removed by its label at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pebble import Pebble, have_pebble, running_pebble

from .conftest import FAST_ROLLOUT, Project, free_ports, project_in

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not have_pebble() and os.environ.get("CI") != "true",
        reason="Debian's pebble is not installed (scripts/setup.sh installs it)",
    ),
]

HOST = "shop.example.com"


def _spec(
    project: str, pebble: Pebble, *, listen: int, admin: int, tls: int, web: int, api: int
) -> str:
    return (
        f"project: {project}\nproxy: {{mode: host}}\n{FAST_ROLLOUT}"
        f"listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n"
        "health: {interval: 0.5, timeout: 1.0, rise: 1, fall: 2}\n"
        "tls:\n"
        f"  listen: 127.0.0.1:{tls}\n"
        "  acme:\n"
        "    email: ops@example.com\n"
        f"    directory: {pebble.directory}\n"
        f"    ca_bundle: {pebble.ca_bundle}\n"
        "  redirect_http: true\n"
        "  hsts: 180d\n"
        "routes:\n"
        f"  - {{host: {HOST}, backends: [web]}}\n"
        f"  - {{host: {HOST}, path: /api/, backends: [api], strip_prefix: false}}\n"
        "backends:\n"
        f"  - {{name: web, port: {web}, replicas: 2, weight: 1}}\n"
        f"  - {{name: api, port: {api}}}\n"
    )


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path, "t22e") as proj:
        yield proj


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_a_newcomer_gets_https_routes_over_http2_from_pebble(
    newcomer: Project, tmp_path: Path
) -> None:
    listen, admin, tls, web, api = free_ports(5)
    with running_pebble(tmp_path / "pebble", http_port=listen, tls_port=tls) as pebble:
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        newcomer.write(
            _spec(newcomer.name, pebble, listen=listen, admin=admin, tls=tls, web=web, api=api)
        )
        log_path = newcomer.folder / "up.log"
        started = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lbrec", "up", "--resync", "5", "--down"],
                cwd=newcomer.folder,
                env=newcomer.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            try:
                _check(
                    newcomer, pebble, root, listen=listen, tls=tls, started=started, log=log_path
                )
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)  # `--down`: it removes what it started
                    try:
                        proc.wait(timeout=90)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)


def _check(
    project: Project,
    pebble: Pebble,
    root: Path,
    *,
    listen: int,
    tls: int,
    started: float,
    log: Path,
) -> None:
    resolve = ("--resolve", f"{HOST}:{tls}:127.0.0.1", "--cacert", str(root))
    fmt = "%{http_code} %{http_version} %header{x-backend}"

    def https(path: str) -> str:
        out = _curl(
            *resolve, "--http2", "-o", "/dev/null", "-w", fmt, f"https://{HOST}:{tls}{path}"
        )
        return out.stdout if out.returncode == 0 else f"curl {out.returncode}: {out.stderr}"

    deadline = time.monotonic() + 300  # image builds, containers, then the ACME order
    first = ""
    while time.monotonic() < deadline:
        first = https("/")
        if first.startswith("200 "):
            break
        time.sleep(0.5)
    else:
        tail = log.read_text()[-4000:]
        raise AssertionError(f"no HTTPS answer within 300s: {first}\n{tail}\n{pebble.log[-2000:]}")
    print(f"\nlbrec up to a verified HTTPS answer: {time.monotonic() - started:.1f}s")

    # over HTTP/2, a certificate curl verifies against Pebble's root, two backends by path
    home = {https("/").split()[2] for _ in range(6)}
    assert all(b.startswith("web") for b in home) and home, home
    apis = {https("/api/items").split()[2] for _ in range(4)}
    assert apis and all(b.startswith("api") for b in apis), apis
    assert https("/").split()[:2] == ["200", "2"]
    headers = _curl(*resolve, "--http2", "-D", "-", "-o", "/dev/null", f"https://{HOST}:{tls}/")
    assert "strict-transport-security: max-age=15552000" in headers.stdout.lower(), headers
    issuer = _curl(*resolve, "-v", "-o", "/dev/null", f"https://{HOST}:{tls}/").stderr
    assert "issuer:" in issuer and "Pebble" in issuer, issuer

    # http:// is redirected to https:// on the TLS listener's port
    plain = _curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--resolve",
        f"{HOST}:{listen}:127.0.0.1",
        f"http://{HOST}:{listen}/cart?x=1",
    )
    assert plain.stdout == f"301 https://{HOST}:{tls}/cart?x=1", plain

    # `lbrec certs` lists the name with Pebble as the issuer
    certs = subprocess.run(
        [sys.executable, "-m", "lbrec", "certs"],
        cwd=project.folder,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert certs.returncode == 0 and HOST in certs.stdout and "Pebble" in certs.stdout, certs
