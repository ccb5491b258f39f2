"""A real ACME server, offline: Debian's ``pebble`` and ``pebble-challtestsrv``, started by a
test (no service) on free loopback ports, stopped by their pids.

* ``pebble-challtestsrv`` is only the DNS: it answers 127.0.0.1 for any name (no AAAA), so
  every host a test orders resolves to this machine; its own challenge servers are off.
* ``pebble`` validates HTTP-01 at ``http_port`` and TLS-ALPN-01 at ``tls_port`` of 127.0.0.1:
  the test's own listeners (the proxy's plain and TLS listeners, or a small stand-in).
  ``PEBBLE_VA_NOSLEEP=1`` (no random sleep before a validation), ``PEBBLE_WFE_NONCEREJECT=0``
  (no nonce rejected on purpose), ``PEBBLE_AUTHZREUSE=0`` (every order validates afresh: a
  renewal proves the challenge again).
* Its HTTPS certificate is made with :class:`tests.support.certs.CertAuthority` for
  ``localhost``: pass :attr:`Pebble.ca_bundle` as ``tls.acme.ca_bundle`` and
  :attr:`Pebble.directory` as ``tls.acme.directory``. :meth:`Pebble.root_pem` is the root of
  the certificates it issues (a client of the proxy trusts that one).

Usage::

    with running_pebble(tmp_path / "pebble", http_port=h, tls_port=t) as pebble:
        ...  # pebble.directory, pebble.ca_bundle; pebble.stop() / pebble.start() for outages
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .certs import CertAuthority

__all__ = ["CHALLTESTSRV", "PEBBLE", "Pebble", "free_port", "have_pebble", "running_pebble"]

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"


def have_pebble() -> bool:
    return all(os.access(p, os.X_OK) for p in (PEBBLE, CHALLTESTSRV))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} within 15s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()  # by its own pid: nothing else is touched
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class Pebble:
    folder: Path
    http_port: int
    tls_port: int
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    dns_management_port: int = field(default_factory=free_port)
    _pebble: subprocess.Popen[bytes] | None = None
    _dns: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ca = CertAuthority(self.folder / "https")
        cert, key = ca.leaf("pebble", ["localhost"])
        self.ca_bundle = ca.pem
        self.config = self.folder / "pebble-config.json"
        document = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        self.config.write_text(json.dumps(document, indent=2))

    @property
    def directory(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def start(self) -> None:
        """Start the DNS (once) and Pebble (again after :meth:`stop`: a new CA, new roots)."""
        if self._dns is None or self._dns.poll() is not None:
            log = self.folder / "challtestsrv.log"
            self._dns = subprocess.Popen(
                [
                    CHALLTESTSRV,
                    "-dns01",
                    f"127.0.0.1:{self.dns_port}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-management",
                    f"127.0.0.1:{self.dns_management_port}",
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                ],
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            _wait_port(self.dns_management_port, self._dns, "pebble-challtestsrv", log)
        if self._pebble is not None and self._pebble.poll() is None:
            return
        log = self.folder / "pebble.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
            **self.env,
        }
        self._pebble = subprocess.Popen(
            [PEBBLE, "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.folder,
        )
        _wait_port(self.port, self._pebble, "pebble", log)

    def stop(self) -> None:
        """Stop Pebble only (the CA is down); the DNS keeps running."""
        _stop(self._pebble)

    def close(self) -> None:
        _stop(self._pebble)
        _stop(self._dns)

    @property
    def log(self) -> str:
        path = self.folder / "pebble.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def root_pem(self) -> bytes:
        """The root of the certificates this Pebble issues (new at each start)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://localhost:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return bytes(answer.read())


@contextlib.contextmanager
def running_pebble(
    folder: Path, *, http_port: int, tls_port: int, env: dict[str, str] | None = None
) -> Iterator[Pebble]:
    if shutil.which(PEBBLE) is None:
        raise RuntimeError(f"{PEBBLE}: not installed (scripts/setup.sh installs Debian's pebble)")
    pebble = Pebble(folder, http_port=http_port, tls_port=tls_port, env=dict(env or {}))
    try:
        pebble.start()
        yield pebble
    finally:
        pebble.close()
