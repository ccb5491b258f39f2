"""Issue 22: a certificate of tls.certificates that cannot be served is refused when the file
is loaded (apply, diff, validate, watch), naming the field and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.errors import SpecError
from tests.support.certs import CertAuthority


def _write(folder: Path, cert: str, key: str, host: str = "shop.example.com") -> Workspace:
    spec = folder / "desired-state.yaml"
    spec.write_text(
        "listen: 127.0.0.1:8080\n"
        f"tls: {{listen: '127.0.0.1:8443', certificates: [{{cert: {cert}, key: {key}}}]}}\n"
        f"routes: [{{host: {host}, backends: [web]}}]\n"
        "backends: [{name: web, port: 9001}]\n"
    )
    return Workspace.at(spec)


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "certs")


def test_a_good_certificate_loads(tmp_path: Path, ca: CertAuthority) -> None:
    ca.leaf("shop", ["shop.example.com"])
    desired = _write(tmp_path, "certs/shop.pem", "certs/shop.key").load()
    assert desired.tls is not None


def _pair(ca: CertAuthority, kind: str) -> tuple[str, str]:
    if kind == "missing":
        return "certs/none.pem", "certs/none.key"
    if kind == "expired":
        ca.leaf("old", ["shop.example.com"], days=-1, starts=-9)
        return "certs/old.pem", "certs/old.key"
    if kind == "mismatched":
        ca.leaf("a", ["shop.example.com"])
        ca.leaf("b", ["shop.example.com"])
        return "certs/a.pem", "certs/b.key"
    ca.leaf("other", ["other.example.com"])
    return "certs/other.pem", "certs/other.key"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "none.pem: cannot read"),
        ("expired", "old.pem: expired on"),
        ("mismatched", "b.key: the key does not match the certificate"),
        ("elsewhere", "covers other.example.com, no host of routes: (shop.example.com)"),
    ],
)
def test_a_bad_certificate_is_refused_with_the_field(
    tmp_path: Path, ca: CertAuthority, kind: str, message: str
) -> None:
    cert, key = _pair(ca, kind)
    with pytest.raises(SpecError) as caught:
        _write(tmp_path, cert, key).load()
    assert "tls.certificates[0]" in caught.value.message
    assert message in caught.value.message
    assert "nothing was applied" in caught.value.message


def test_a_wildcard_route_and_certificate(tmp_path: Path, ca: CertAuthority) -> None:
    ca.leaf("wild", ["*.example.com"])
    _write(tmp_path, "certs/wild.pem", "certs/wild.key", host="'*.example.com'").load()
