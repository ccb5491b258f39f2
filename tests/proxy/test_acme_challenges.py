"""The proxy's side of ACME (proxy/acme_challenges.py): only challenges are ever served."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lbrec.proxy.acme_challenges import ACME_TLS_ALPN, Challenges
from tests.support.certs import CertAuthority


@pytest.fixture
def acme_dir(tmp_path: Path) -> Path:
    folder = tmp_path / ".lbrec" / "acme"
    (folder / "http-01").mkdir(parents=True)
    (folder / "tls-alpn-01").mkdir()
    (folder / "account").mkdir()
    (folder / "account" / "key.pem").write_text("SECRET ACCOUNT KEY\n")
    (folder / "http-01" / "tok_EN-1").write_text("tok_EN-1.thumb\n")
    return folder


def test_http01_serves_a_token_and_nothing_else(acme_dir: Path) -> None:
    challenges = Challenges(acme_dir)
    assert challenges.http01("tok_EN-1") == b"tok_EN-1.thumb"
    for token in ("missing", "../account/key.pem", "..", "", "a/b", "tok_EN-1\x00", "x" * 300):
        assert challenges.http01(token) is None, token


def test_an_oversized_file_is_not_a_key_authorization(acme_dir: Path) -> None:
    (acme_dir / "http-01" / "big").write_bytes(b"x" * 5000)
    assert Challenges(acme_dir).http01("big") is None


def test_tls_alpn01_context_for_a_name_and_reloaded_when_renewed(
    acme_dir: Path, tmp_path: Path
) -> None:
    ca = CertAuthority(tmp_path / "pki")
    cert, key = ca.leaf("a", ["a.example"])
    target = acme_dir / "tls-alpn-01"
    (target / "a.example.pem").write_bytes(cert.read_bytes())
    (target / "a.example.key").write_bytes(key.read_bytes())
    challenges = Challenges(acme_dir)
    first = challenges.tls_alpn01("A.Example.")
    assert first is not None and challenges.tls_alpn01("a.example") is first  # cached
    cert2, key2 = ca.leaf("a2", ["a.example"])
    (target / "a.example.pem").write_bytes(cert2.read_bytes())
    (target / "a.example.key").write_bytes(key2.read_bytes())
    os.utime(target / "a.example.pem", ns=(1, 1))  # a new stamp, whatever the clock's grain
    second = challenges.tls_alpn01("a.example")
    assert second is not None and second is not first
    for name in (None, "", "b.example", "../account/key", "a.example/../x"):
        assert challenges.tls_alpn01(name) is None, name
    assert ACME_TLS_ALPN == "acme-tls/1"
