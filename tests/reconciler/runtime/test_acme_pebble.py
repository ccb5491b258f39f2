"""Real ACME, offline: the certificate manager against Debian's Pebble (tests/support/pebble.py),
its challenges answered from the deploy folder's .lbrec/acme by a stand-in of the proxy's side
(tests/support/acme_responder.py) on 127.0.0.1.

What is proven: certificates for two hosts by HTTP-01 and by TLS-ALPN-01 (and TLS-ALPN-01 when
port 80 is closed, with ``auto``), stored 0600 in 0700 folders and listed in the pool; a renewal
(the clock moved past two thirds) that keeps the old certificate serving until the pass puts the
new one in place; the CA down, refusing, or too slow: nothing serving is touched, the CA's error
is recorded and shown, and the back-off grows.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.tls import CertStore
from lbrec.reconciler.adapters.acme import AcmeClient, ari_certificate_id
from lbrec.reconciler.adapters.cert_store import read_held, read_records
from lbrec.reconciler.adapters.files import atomic_write
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.certs import certificate_status
from lbrec.reconciler.core.certs import RenewalPolicy, renewal_time
from lbrec.reconciler.core.render import render_pool
from lbrec.reconciler.core.spec import AcmeSpec
from lbrec.reconciler.runtime.certs import CertManager, CertMetrics
from tests.support.acme_responder import AcmeResponder
from tests.support.pebble import Pebble, free_port, have_pebble, running_pebble

# Skipped on a machine without Debian's pebble, never in CI (scripts/setup.sh installs it).
pytestmark = [
    pytest.mark.skipif(
        not have_pebble() and os.environ.get("CI") != "true",
        reason="Debian's pebble is not installed (scripts/setup.sh installs it)",
    ),
    pytest.mark.slow,  # about 50 s in all: not in `scripts/test.sh --quick`
    pytest.mark.timeout(180),
]

HOSTS = ("shop.example.com", "api.example.com")


def _spec(pebble: Pebble, challenge: str, *, directory: str | None = None) -> str:
    routes = "".join(f"  - {{host: {h}, backends: [web]}}\n" for h in HOSTS)
    return (
        "listen: 127.0.0.1:18080\nadmin: 127.0.0.1:18081\n"
        "tls:\n  listen: 127.0.0.1:18443\n  acme:\n    email: ops@example.com\n"
        f"    directory: {directory or pebble.directory}\n"
        f"    ca_bundle: {pebble.ca_bundle}\n    challenge: {challenge}\n"
        f"routes:\n{routes}backends:\n  - {{name: web, port: 8000}}\n"
    )


@dataclass
class Site:
    """A deploy folder with a desired state, its pool (written as a pass would), the manager
    with an injected clock, and the stand-in proxy answering challenges and serving the pool's
    certificates."""

    folder: Path
    pebble: Pebble
    responder: AcmeResponder
    manager: CertManager
    metrics: CertMetrics
    now: list[dt.datetime]
    notified: list[str] = field(default_factory=list)
    store: CertStore = field(default_factory=lambda: CertStore(()))

    @property
    def workspace(self) -> Workspace:
        return self.manager.workspace

    def write_spec(self, text: str) -> None:
        atomic_write(self.workspace.spec_file, text)

    def a_pass(self) -> BackendsConfig:
        """What a pass does for certificates: observe .lbrec/certs, render, write, reload."""
        desired = self.workspace.load()
        observed = self.workspace.observe(())
        pool = render_pool(desired, instances={}, certificates=observed.certificates)
        atomic_write(self.workspace.pool_file, pool.to_json())
        assert pool.tls is not None
        pairs = [
            (
                str(self.workspace.pool_file.parent / c.cert),
                str(self.workspace.pool_file.parent / c.key),
            )
            for c in pool.tls.certificates
        ]
        self.store = CertStore.load(pairs, previous=self.store)
        return pool

    def served_serial(self, name: str) -> str:
        """A real TLS client's view of what the listener serves for ``name`` (SNI)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        address = ("127.0.0.1", self.responder.tls_port or 0)
        with (
            socket.create_connection(address, 5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        from cryptography import x509

        assert der is not None
        return format(x509.load_der_x509_certificate(der).serial_number, "x")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from _site(tmp_path, close_port_80=False)


@pytest.fixture
def site_port_80_closed(tmp_path: Path) -> Iterator[Site]:
    yield from _site(tmp_path, close_port_80=True)


def _site(tmp_path: Path, *, close_port_80: bool) -> Iterator[Site]:
    http_port, tls_port = free_port(), free_port()
    with running_pebble(tmp_path / "pebble", http_port=http_port, tls_port=tls_port) as pebble:
        folder = tmp_path / "deploy"
        folder.mkdir()
        holder: dict[str, Site] = {}
        responder = AcmeResponder(
            folder / ".lbrec" / "acme",
            http_port=None if close_port_80 else http_port,
            tls_port=tls_port,
            serving=lambda: holder["site"].store,
        )
        now = [dt.datetime.now(dt.UTC)]
        metrics = CertMetrics(CollectorRegistry())
        notified: list[str] = []
        manager = CertManager(
            Workspace.at(folder / "desired-state.yaml"),
            notified.append,
            clock=lambda: now[0],
            policy=RenewalPolicy(first_backoff=60.0),
            client_factory=lambda f, s: AcmeClient(f, s, timeout=5, order_timeout=30),
            metrics=metrics,
        )
        site = Site(folder, pebble, responder, manager, metrics, now, notified)
        holder["site"] = site
        try:
            yield site
        finally:
            manager.stop()
            site.responder.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_two_hosts_get_certificates_and_the_pool_serves_them(site: Site, challenge: str) -> None:
    site.write_spec(_spec(site.pebble, challenge))
    site.a_pass()  # the pool carries tls.acme_dir: the proxy answers challenges from now on
    started = time.monotonic()
    site.manager.tick()
    elapsed = time.monotonic() - started
    held = read_held(site.folder)
    assert sorted(held) == sorted(HOSTS), site.pebble.log[-2000:]
    print(f"\n{challenge}: two certificates from Pebble in {elapsed:.1f}s")  # the figure
    assert site.notified == [f"certificate {', '.join(HOSTS)} obtained"]
    assert any(hit.startswith(challenge) for hit in site.responder.hits)
    assert not any(
        hit.startswith("tls-alpn-01" if challenge == "http-01" else "http-01")
        for hit in site.responder.hits
    )
    for cert in held.values():
        assert cert.issuer.startswith("Pebble")
        assert _mode(site.folder / cert.key) == 0o600 and _mode(site.folder / cert.cert) == 0o600
        assert _mode((site.folder / cert.cert).parent) == 0o700
    assert _mode(site.folder / ".lbrec" / "certs") == 0o700
    account = site.folder / ".lbrec" / "acme" / "account"
    assert _mode(account) == 0o700 and _mode(account / "key.pem") == 0o600
    # the challenge files are gone once the orders ended
    assert not list((site.folder / ".lbrec" / "acme").glob(f"{challenge}/*"))

    pool = site.a_pass()
    assert pool.tls is not None and len(pool.tls.certificates) == 2
    for name in HOSTS:
        assert site.served_serial(name) == held[name].serial
    # nothing more is due; the next is the renewal at two thirds of the lifetime
    assert site.manager.tick() > 3600
    assert site.metrics.orders.labels("issued")._value.get() == 2
    rows = {r["name"]: r for r in certificate_status(site.workspace, site.workspace.load())}
    assert rows[HOSTS[0]]["state"] == "valid" and rows[HOSTS[0]]["issuer"].startswith("Pebble")
    # the CA's renewal info: Pebble 2.4 has none (the manager then keeps two thirds)
    spec = site.workspace.load().tls
    assert spec is not None and spec.acme is not None
    pem = (site.folder / held[HOSTS[0]].cert).read_bytes()
    assert AcmeClient(site.folder, spec.acme).renewal_window(pem) is None
    assert "." in ari_certificate_id(pem)


def test_tls_alpn01_when_port_80_is_closed(site_port_80_closed: Site) -> None:
    """``auto`` tries HTTP-01 first; the CA cannot reach port 80 (the CA's own error is kept);
    the next attempt, after the back-off, is TLS-ALPN-01, and succeeds."""
    site = site_port_80_closed
    site.write_spec(_spec(site.pebble, "auto").replace("127.0.0.1:18080", "0.0.0.0:18080"))
    site.a_pass()
    site.manager.tick()
    records = read_records(site.folder)
    assert read_held(site.folder) == {}
    assert records[HOSTS[0]].failures == 1
    assert records[HOSTS[0]].failed_challenge == "http-01"
    assert "http-01" in (records[HOSTS[0]].last_error or "")
    assert "connection" in (records[HOSTS[0]].last_error or "").lower()
    site.now[0] += dt.timedelta(seconds=61)  # the back-off is over
    site.manager.tick()
    assert sorted(read_held(site.folder)) == sorted(HOSTS)
    assert all(h.startswith("tls-alpn-01") for h in site.responder.hits)


def test_a_renewal_keeps_the_old_certificate_serving_until_the_new_one_is_in_place(
    site: Site,
) -> None:
    site.write_spec(_spec(site.pebble, "http-01"))
    site.a_pass()
    site.manager.tick()
    site.a_pass()
    before = read_held(site.folder)
    old = before[HOSTS[0]]
    assert site.served_serial(HOSTS[0]) == old.serial

    # Serve while the renewal runs: a client handshakes every 50 ms; none may fail.
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                site.served_serial(HOSTS[0])
            except OSError as err:
                failures.append(str(err))
            time.sleep(0.05)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        site.now[0] = renewal_time(old) + dt.timedelta(seconds=1)
        site.manager.tick()
        new = read_held(site.folder)[HOSTS[0]]
        assert new.serial != old.serial
        assert site.notified[-1].startswith("certificate ")
        # stored, not yet in the pool: the old one still serves, its files still there
        assert site.served_serial(HOSTS[0]) == old.serial
        assert (site.folder / old.cert).is_file() and (site.folder / old.key).is_file()
        site.a_pass()  # the pass the manager asked for
        assert site.served_serial(HOSTS[0]) == new.serial
    finally:
        stop.set()
        thread.join(10)
    assert failures == []
    # only the names whose time came (each certificate has its own jitter)
    due = [c for c in before.values() if renewal_time(c) <= site.now[0]]
    assert site.metrics.orders.labels("renewed")._value.get() == len(due) >= 1


def test_the_ca_down_refusing_or_slow_serving_goes_on_and_the_backoff_grows(site: Site) -> None:
    site.write_spec(_spec(site.pebble, "http-01"))
    site.a_pass()
    site.manager.tick()
    site.a_pass()
    held = read_held(site.folder)
    serving = {name: site.served_serial(name) for name in HOSTS}

    # 1. Pebble down: the renewal fails with why, the name backs off, nothing is touched.
    site.pebble.stop()
    site.now[0] = max(renewal_time(c) for c in held.values()) + dt.timedelta(seconds=1)
    site.manager.tick()
    record = read_records(site.folder)[HOSTS[0]]
    assert record.failures == 1
    assert "cannot reach the ACME server" in (record.last_error or "")
    assert record.retry_at == site.now[0] + dt.timedelta(seconds=60)
    assert read_held(site.folder) == held
    assert {name: site.served_serial(name) for name in HOSTS} == serving
    rows = {r["name"]: r for r in certificate_status(site.workspace, site.workspace.load())}
    assert rows[HOSTS[0]]["state"] == "failing"
    assert "cannot reach" in rows[HOSTS[0]]["last_error"]
    # not retried before the back-off ends (no storm), then retried and backed off twice as long
    site.manager.tick()
    assert read_records(site.folder)[HOSTS[0]].failures == 1
    site.now[0] += dt.timedelta(seconds=61)
    site.manager.tick()
    record = read_records(site.folder)[HOSTS[0]]
    assert record.failures == 2
    assert record.retry_at == site.now[0] + dt.timedelta(seconds=120)
    assert site.metrics.failures.labels(HOSTS[0])._value.get() == 2
    assert site.metrics.orders.labels("failed")._value.get() == 4  # two names, twice

    # 2. Slow: a CA that accepts and never answers; the order ends at the client's timeout.
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(16)
    slow = f"https://localhost:{tarpit.getsockname()[1]}/dir"
    try:
        site.write_spec(_spec(site.pebble, "http-01", directory=slow))
        site.now[0] += dt.timedelta(seconds=121)
        started = time.monotonic()
        site.manager.tick()
        assert time.monotonic() - started < 30  # bounded by the timeouts, whatever the CA does
        record = read_records(site.folder)[HOSTS[0]]
        assert record.failures == 3 and "Timeout" in (record.last_error or "")
        assert {name: site.served_serial(name) for name in HOSTS} == serving
    finally:
        tarpit.close()

    # 3. Refusing: Pebble is back (a new CA that forgot the account), but the challenge
    # cannot be answered (port 80 closed): the CA's own problem document is recorded.
    site.write_spec(_spec(site.pebble, "http-01"))
    site.pebble.start()
    site.responder.close()
    site.now[0] += dt.timedelta(seconds=241)
    site.manager.tick()
    record = read_records(site.folder)[HOSTS[0]]
    assert record.failures == 4
    assert "urn:ietf:params:acme:error:connection" in (record.last_error or ""), record
    assert read_held(site.folder) == held  # still the old certificates
    # once the CA can validate again, the name recovers and its failures are forgotten
    site.responder = AcmeResponder(
        site.folder / ".lbrec" / "acme",
        http_port=site.pebble.http_port,
        tls_port=site.pebble.tls_port,
        serving=lambda: site.store,
    )
    site.now[0] += dt.timedelta(seconds=481)
    site.manager.tick()
    assert read_records(site.folder)[HOSTS[0]].failures == 0
    assert read_held(site.folder)[HOSTS[0]].serial != held[HOSTS[0]].serial


def test_the_manager_thread_orders_and_asks_the_loop_for_a_pass(site: Site) -> None:
    """Beside the loop: its own thread, the loop notified when a certificate was obtained."""
    site.write_spec(_spec(site.pebble, "tls-alpn-01"))
    site.a_pass()
    site.manager.poll = 0.2
    started = time.monotonic()
    site.manager.start()
    deadline = time.monotonic() + 60
    while not site.notified and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    site.manager.stop()
    assert site.notified, site.pebble.log[-2000:]
    print(f"\nfirst certificates {elapsed:.1f}s after the manager started")
    assert sorted(read_held(site.folder)) == sorted(HOSTS)


def test_orders_wait_for_the_pool_to_answer_challenges(site: Site) -> None:
    site.write_spec(_spec(site.pebble, "http-01"))
    assert site.manager.tick() <= 1.0  # soon again, nothing ordered
    assert site.manager.waiting_for_pool and read_records(site.folder) == {}


def test_acme_spec_accepts_pebbles_directory(site: Site) -> None:
    spec = AcmeSpec(email="a@example.com", directory=site.pebble.directory)
    assert spec.challenge == "auto"
