"""`lbrec certs` (and its rows in `lbrec status`): names, issuer, expiry, next renewal and the
CA's last error, as a table and as -o json; never a key, a key's path or the account."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.cert_store import read_held, store_certificate, write_record
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.certs import NameRecord, after_failure
from tests.support.certs import CertAuthority

SPEC = """
listen: 127.0.0.1:18080
tls:
  listen: 127.0.0.1:18443
  acme: {email: ops@example.com}
  certificates:
    - {cert: mine.pem, key: mine.key}
routes:
  - {host: shop.example.com, backends: [web]}
  - {host: api.example.com, backends: [web]}
  - {host: own.example.org, backends: [web]}
backends:
  - {name: web, port: 8000}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    ca = CertAuthority(tmp_path / "ca")
    cert, key = ca.leaf("mine", ["own.example.org"])
    (tmp_path / "mine.pem").write_bytes(cert.read_bytes())
    (tmp_path / "mine.key").write_bytes(key.read_bytes())
    chain, leaf_key = ca.leaf("shop", ["shop.example.com"], days=90)
    store_certificate(tmp_path, "shop.example.com", chain.read_text(), leaf_key.read_text())
    failing = after_failure(
        NameRecord(),
        dt.datetime.now(dt.UTC),
        "api.example.com: http-01: urn:ietf:params:acme:error:unauthorized :: 404",
    )
    write_record(tmp_path, "api.example.com", failing)
    (tmp_path / "desired-state.yaml").write_text(SPEC)
    return tmp_path


def test_certs_json_lists_names_issuer_expiry_next_renewal_and_errors(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "-o", "json", "-f", str(folder / "desired-state.yaml")]) == 0
    out = capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads(out)["certificates"]}
    assert rows["shop.example.com"]["state"] == "valid"
    assert rows["shop.example.com"]["issuer"] == "lbrec test CA"
    assert rows["shop.example.com"]["next_renewal"] is not None
    assert rows["api.example.com"]["state"] == "failing"
    assert "unauthorized" in rows["api.example.com"]["last_error"]
    assert rows["own.example.org"]["source"] == "file"
    assert "own.example.org" not in [r["name"] for r in rows.values() if r["source"] == "acme"]
    assert ".key" not in out and "PRIVATE" not in out and "account" not in out


def test_certs_table(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "-f", str(folder / "desired-state.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "NAME",
        "STATE",
        "ISSUER",
        "EXPIRES",
        "NEXT",
        "RENEWAL",
        "LAST",
        "ERROR",
    ]
    assert "failing (1 failed)" in out and "unauthorized" in out
    held = read_held(folder)["shop.example.com"]
    assert held.not_after.isoformat()[:19] in out


def test_renew_refuses_a_name_lbrec_does_not_order(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["certs", "--renew", "own.example.org", "-f", str(folder / "desired-state.yaml")])
    assert code == 2
    assert "not a name lbrec orders" in capsys.readouterr().err


def test_a_wildcard_route_without_a_certificate_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SPEC.replace("own.example.org", "'*.apps.example.com'")
    (folder / "desired-state.yaml").write_text(
        text.replace("  certificates:\n    - {cert: mine.pem, key: mine.key}\n", "")
    )
    assert main(["validate", "-f", str(folder / "desired-state.yaml")]) == 2
    err = capsys.readouterr().err
    assert "routes[2].host" in err and "DNS-01" in err
