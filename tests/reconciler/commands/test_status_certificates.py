"""Issue 22, the operator's view from the reconciler's side: a renewal that fails against a
real (unreachable) ACME directory is recorded by the certificate manager, shown by
`lbrec status` (text and -o json) with the CA's error and the certificate still in service,
and published for the proxy (``.lbrec/acme/status.json``), whose view joins it to the
certificate it serves. Never a key, a key's path or the account."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lbrec.proxy.cert_view import certificates_view
from lbrec.proxy.config import load_config
from lbrec.proxy.tls import CertStore
from lbrec.reconciler.adapters.acme import AcmeClient
from lbrec.reconciler.adapters.cert_store import STATUS_FILE, read_held, store_certificate
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.status import collect_status, show_status
from lbrec.reconciler.core.certs import RenewalPolicy
from lbrec.reconciler.engine.converge import converge
from lbrec.reconciler.runtime.certs import CertManager, CertMetrics
from tests.support.certs import CertAuthority

from ..fakes import FAST, TWO, FakeDocker, make_folder


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec(ca_bundle: Path, port: int) -> str:
    return (
        FAST
        + "listen: 127.0.0.1:18080\ntls:\n  listen: 127.0.0.1:18443\n  acme:\n"
        + f"    email: ops@example.com\n    directory: http://127.0.0.1:{port}/dir\n"
        + f"    ca_bundle: {ca_bundle}\n"
        + "routes:\n  - {host: shop.example.com, backends: [a]}\n"
        + "  - {host: api.example.com, backends: [b]}\n"
        + TWO
    )


@pytest.fixture
def site(tmp_path: Path) -> tuple[Workspace, FakeDocker, str]:
    folder = make_folder(tmp_path)
    ca = CertAuthority(tmp_path / "pki")
    chain, key = ca.leaf("shop", ["shop.example.com"], days=30)
    held = store_certificate(folder, "shop.example.com", chain.read_text(), key.read_text())
    (folder / "desired-state.yaml").write_text(_spec(ca.pem, _closed_port()))
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    converge(workspace, docker, check=False, hooks=docker.hooks())  # the pool: tls.acme_dir
    return workspace, docker, held.serial


def test_a_failed_renewal_is_shown_by_status_and_published_for_the_proxy(
    site: tuple[Workspace, FakeDocker, str], capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, docker, serial = site
    folder = workspace.folder
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=25)  # past two thirds: renewal due
    manager = CertManager(
        workspace,
        lambda _why: None,
        clock=lambda: later,
        policy=RenewalPolicy(),
        client_factory=lambda f, s: AcmeClient(f, s, timeout=2, order_timeout=5),
        metrics=CertMetrics(CollectorRegistry()),
    )
    manager.tick()

    # lbrec status -o json: the failure, the CA's words, the serving certificate's expiry
    status = collect_status(workspace, lambda _w, _d: docker)
    rows = {r["name"]: r for r in status["certificates"]}
    shop, api = rows["shop.example.com"], rows["api.example.com"]
    assert shop["state"] == "failing" and shop["failures"] == 1, shop
    assert "cannot reach the ACME server" in shop["last_error"]
    assert shop["serial"] == serial and shop["issuer"] == "lbrec test CA"
    assert shop["not_after"] == read_held(folder)["shop.example.com"].not_after.isoformat()
    assert api["state"] == "failing" and api["not_after"] is None
    show_status(workspace, lambda _w, _d: docker, json_mode=True)
    text_json = capsys.readouterr().out
    assert json.loads(text_json)["certificates"] == status["certificates"]

    # lbrec status (text): a certificates table with the same facts
    show_status(workspace, lambda _w, _d: docker, json_mode=False)
    text = capsys.readouterr().out
    table = text.split("\ncertificates:\n", 1)[1]
    assert table.splitlines()[0].split()[:3] == ["NAME", "STATE", "ISSUER"]
    line = next(x for x in table.splitlines() if x.startswith("shop.example.com"))
    assert "failing (1 failed)" in line and "lbrec test CA" in line
    assert "cannot reach the ACME server" in line

    # the proxy's view: the manager's file joined with the certificate the pool serves
    path = folder / STATUS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pool = load_config(workspace.pool_file)
    assert pool.tls is not None and pool.tls.acme_dir is not None
    base = workspace.pool_file.parent
    store = CertStore.load([(str(base / c.cert), str(base / c.key)) for c in pool.tls.certificates])
    view = certificates_view(store, base / pool.tls.acme_dir)
    served = {r["name"]: r for r in view["certificates"]}
    assert served["shop.example.com"]["serving"] and served["shop.example.com"]["serial"] == serial
    assert served["shop.example.com"]["last_error"] == shop["last_error"]
    assert served["shop.example.com"]["next_renewal"] == shop["next_renewal"]
    assert served["api.example.com"]["serving"] is False

    for out in (text_json, text, path.read_text(), json.dumps(view)):
        assert "PRIVATE" not in out and f"{serial}.key" not in out and "account" not in out


def test_an_unchanged_status_is_not_rewritten(site: tuple[Workspace, FakeDocker, str]) -> None:
    """No order due: the file is written once, then left alone (its mtime is stable)."""
    workspace, _docker, _serial = site
    manager = CertManager(
        workspace,
        lambda _why: None,
        policy=RenewalPolicy(),
        client_factory=lambda f, s: AcmeClient(f, s, timeout=2, order_timeout=5),
        metrics=CertMetrics(CollectorRegistry()),
    )
    # api.example.com is due (no certificate) and fails at once; then it backs off
    manager.tick()
    path = workspace.folder / STATUS_FILE
    first = path.stat().st_mtime_ns, path.read_text()
    manager.tick()
    assert (path.stat().st_mtime_ns, path.read_text()) == first


def test_a_failed_renew_by_hand_is_published_for_the_proxy(
    site: tuple[Workspace, FakeDocker, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`lbrec certs --renew NAME` that fails: exit 1, the CA's error said, the certificate in
    service kept, and the status page learns it without waiting for the manager."""
    from lbrec.reconciler.commands.cli import main

    workspace, _docker, serial = site
    code = main(["certs", "--renew", "shop.example.com", "-f", str(workspace.spec_file)])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the ACME server" in err and "keeps serving" in err
    rows = {
        r["name"]: r
        for r in json.loads((workspace.folder / STATUS_FILE).read_text())["certificates"]
    }
    assert rows["shop.example.com"]["serial"] == serial
    assert "cannot reach the ACME server" in rows["shop.example.com"]["last_error"]
