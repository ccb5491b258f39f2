"""The operator's view of certificates on the proxy (issue 22): what the TLS listener serves
(parsed by the proxy) joined with the certificate manager's next renewal and last error
(``tls.acme_dir/status.json``, written by the reconciler's own writer), on ``/-/pool``,
``/-/stats`` and the status page; never a key or a key's path."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from lbrec.proxy.cert_view import certificates_view, read_manager_status
from lbrec.proxy.tls import CertStore
from lbrec.reconciler.adapters.cert_store import store_certificate, write_status
from lbrec.reconciler.core.certs import (
    NameRecord,
    Wanted,
    after_failure,
    certificate_rows,
)
from tests.support.certs import CertAuthority

from .conftest import ProxyFactory, config_doc
from .test_dashboard import ARTIFACTS, page  # noqa: F401  (page: the Chromium fixture)

ERROR = "cannot reach the ACME server http://127.0.0.1:9/dir: ConnectionError: refused"


def _deploy(tmp_path: Path) -> tuple[CertAuthority, str, str]:
    """A deploy folder as the manager leaves it: shop.example.com obtained over ACME
    (.lbrec/certs), own.example.org the operator's own file; returns the held cert's paths."""
    ca = CertAuthority(tmp_path / "pki")
    chain, key = ca.leaf("shop", ["shop.example.com"], days=30)
    held = store_certificate(tmp_path, "shop.example.com", chain.read_text(), key.read_text())
    ca.leaf("own", ["own.example.org", "www.own.example.org"])
    return ca, held.cert, held.key


def _record_failure(tmp_path: Path, *, now: dt.datetime) -> None:
    """What the manager writes after a failed renewal of shop and a first order of api that
    failed too (its rows, by core/certs.py and adapters/cert_store.py)."""
    from lbrec.reconciler.adapters.cert_store import read_held

    failed = after_failure(NameRecord(), now, ERROR)
    rows = certificate_rows(
        now,
        Wanted(("shop.example.com", "api.example.com")),
        read_held(tmp_path),
        {"shop.example.com": failed, "api.example.com": failed},
    )
    assert write_status(tmp_path, rows)


def _tls_doc(cert: str, key: str) -> dict[str, Any]:
    doc = config_doc([("web", "http://127.0.0.1:9", 1)])
    doc["routes"] = [
        {"host": "shop.example.com", "backends": ["web"]},
        {"host": "api.example.com", "backends": ["web"]},
        {"host": "own.example.org", "backends": ["web"]},
    ]
    doc["tls"] = {
        "listen": "127.0.0.1:0",
        "certificates": [
            {"cert": "pki/own.pem", "key": "pki/own.key"},
            {"cert": cert, "key": key},
        ],
        "acme_dir": ".lbrec/acme",
    }
    return doc


def _no_secret(text: str, tmp_path: Path) -> None:
    """No key, no key's file name (the held pair's and the operator's), no account."""
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    keys = [p.name for p in tmp_path.rglob("*.key")]
    assert keys, "the test has keys to look for"
    for name in keys:
        assert name not in text, f"a key's path in the view: {name}"
    assert "account" not in text


def test_served_certificates_joined_with_the_managers_facts(tmp_path: Path) -> None:
    _ca, cert, key = _deploy(tmp_path)
    now = dt.datetime.now(dt.UTC)
    _record_failure(tmp_path, now=now)
    store = CertStore.load(
        [
            (str(tmp_path / cert), str(tmp_path / key)),
            (str(tmp_path / "pki/own.pem"), str(tmp_path / "pki/own.key")),
        ]
    )
    view = certificates_view(store, tmp_path / ".lbrec/acme", now=now)
    rows = {r["name"]: r for r in view["certificates"]}
    shop = rows["shop.example.com"]
    # the serving certificate is the one stored; the failure shows beside it
    assert shop["serving"] and shop["source"] == "acme" and shop["state"] == "failing"
    assert shop["serial"] == store.for_name("shop.example.com").serial  # type: ignore[union-attr]
    assert shop["issuer"] == "lbrec test CA" and shop["last_error"] == ERROR
    assert shop["next_renewal"] is not None and shop["failures"] == 1
    assert 29 * 86400 < shop["expires_in_s"] <= 30 * 86400
    own = rows["own.example.org"]
    assert own["source"] == "file" and own["state"] == "valid" and own["next_renewal"] is None
    assert own["names"] == ["own.example.org", "www.own.example.org"]
    api = rows["api.example.com"]  # ordered, none obtained yet
    assert not api["serving"] and api["state"] == "failing" and api["last_error"] == ERROR
    assert view["manager"]["error"] is None and view["load_errors"] == []
    _no_secret(json.dumps(view), tmp_path)


def test_a_certificate_that_failed_to_load_is_named_without_its_keys_path(tmp_path: Path) -> None:
    _ca, cert, key = _deploy(tmp_path)
    first = CertStore.load([(str(tmp_path / cert), str(tmp_path / key))])
    missing_key = str(tmp_path / "gone/secret.key")
    store = CertStore.load([(str(tmp_path / cert), missing_key)], previous=first)
    view = certificates_view(store, None, key_paths=[missing_key])
    assert view["load_errors"] and "(its key)" in view["load_errors"][0]
    assert missing_key not in json.dumps(view)
    assert view["manager"] == {"file": None, "names": 0, "error": None}


def test_a_bad_status_file_never_fails_the_view(tmp_path: Path) -> None:
    _ca, cert, key = _deploy(tmp_path)
    acme = tmp_path / ".lbrec/acme"
    acme.mkdir(parents=True, exist_ok=True)
    store = CertStore.load([(str(tmp_path / cert), str(tmp_path / key))])
    (acme / "status.json").write_text("{not json")
    view = certificates_view(store, acme)
    assert view["manager"]["error"].startswith("status.json: not readable")
    assert [r["name"] for r in view["certificates"]] == ["shop.example.com"]
    # fields of unknown kinds and rows without a name are dropped, never shown as they are
    doc = {
        "certificates": [
            {"name": "shop.example.com", "failures": "x", "last_error": {"key": "PRIVATE KEY"}},
            {"names": ["nameless"]},
        ]
    }
    (acme / "status.json").write_text(json.dumps(doc))
    os.utime(acme / "status.json", ns=(1, 1))  # another mtime: read again
    rows, error = read_manager_status(acme)
    assert error is None and list(rows) == ["shop.example.com"]
    assert rows["shop.example.com"]["failures"] == 0
    assert rows["shop.example.com"]["last_error"] is None


def _served_serial(port: int, name: str) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


async def _pool(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/-/pool") as response:
        assert response.status == 200
        doc: dict[str, Any] = await response.json()
        return doc


async def test_pool_and_status_page_show_a_failed_renewal_beside_the_serving_cert(
    proxy: ProxyFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    _ca, cert, key = _deploy(tmp_path)
    running = await proxy(_tls_doc(cert, key))
    assert running.info.tls is not None
    before = await _pool(http, running.admin_url)
    rows = {r["name"]: r for r in before["tls"]["certificates"]}
    assert set(rows) == {"shop.example.com", "own.example.org"}  # no manager facts yet
    assert rows["shop.example.com"]["state"] == "valid"
    assert rows["shop.example.com"]["source"] == "file"  # nothing says the manager has it
    assert rows["shop.example.com"]["issuer"] == "lbrec test CA"
    serial = rows["shop.example.com"]["serial"]

    # The manager records a failed renewal: the next read shows it, with no reload.
    reloads = running.info.server.reloads
    _record_failure(tmp_path, now=dt.datetime.now(dt.UTC))
    after = await _pool(http, running.admin_url)
    rows = {r["name"]: r for r in after["tls"]["certificates"]}
    shop = rows["shop.example.com"]
    assert (shop["state"], shop["source"], shop["last_error"]) == ("failing", "acme", ERROR)
    assert shop["serial"] == serial and shop["next_renewal"]
    assert rows["api.example.com"]["serving"] is False
    assert running.info.server.reloads == reloads
    # and the certificate in service is still the one handed to a client
    served = await asyncio.to_thread(_served_serial, running.info.tls[1], "shop.example.com")
    assert served == serial

    async with http.get(running.admin_url + "/-/stats") as response:
        stats = await response.json()

    # the same document, but for the seconds left, counted at each request's own time
    def steady(tls: dict[str, Any]) -> dict[str, Any]:
        rows = [{k: v for k, v in r.items() if k != "expires_in_s"} for r in tls["certificates"]]
        return {**tls, "certificates": rows}

    assert steady(stats["tls"]) == steady(after["tls"])
    for late, early in zip(stats["tls"]["certificates"], after["tls"]["certificates"], strict=True):
        if early["expires_in_s"] is not None:
            assert 0 <= early["expires_in_s"] - late["expires_in_s"] <= 5
    async with http.get(running.admin_url + "/") as response:
        page = await response.text()
    assert 'id="certs"' in page and ERROR in page and "shop.example.com" in page
    for text in (json.dumps(after), page):
        _no_secret(text, tmp_path)


async def test_a_proxy_without_tls_shows_no_certificates(
    proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    running = await proxy(config_doc([("web", "http://127.0.0.1:9", 1)]))
    doc = await _pool(http, running.admin_url)
    assert doc["tls"] == {
        "certificates": [],
        "load_errors": [],
        "manager": {"file": None, "names": 0, "error": None},
    }


@pytest.mark.slow  # a browser: CI runs it, the quick loop not (tests/conftest.py)
async def test_status_page_certificates_in_chromium(
    page: Any,  # noqa: F811  (test_dashboard's Chromium fixture)
    proxy: ProxyFactory,
    tmp_path: Path,
) -> None:
    """The certificates section drawn by a real browser, under the page's policy: each row's
    state, issuer, expiry and last error; a failure recorded later shows at the next refresh."""
    _ca, cert, key = _deploy(tmp_path)
    running = await proxy(_tls_doc(cert, key))
    await page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', e => window.__cspViolations"
        ".push(`${e.violatedDirective} ${e.blockedURI}`));"
    )
    response = await page.goto(running.admin_url + "/")
    assert response is not None and response.status == 200
    await page.wait_for_selector('[data-cert="shop.example.com"][data-state="valid"]')
    own = await page.inner_text('[data-cert="own.example.org"]')
    assert "lbrec test CA" in own and "yours" in own and "www.own.example.org" in own
    _record_failure(tmp_path, now=dt.datetime.now(dt.UTC))
    await page.wait_for_selector(
        '[data-cert="shop.example.com"][data-state="failing"]', timeout=10_000
    )
    error = await page.inner_text('[data-cert="shop.example.com"] [data-field="last-error"]')
    assert ERROR in error and "in service stays" in error
    api = await page.inner_text('[data-cert="api.example.com"]')
    assert "not served" in api and ERROR in api
    assert await page.evaluate("window.__cspViolations") == []
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-certificates.png"), full_page=True)
