"""Issue 22: the TLS listener checked by a real scanner (Debian's sslscan): no protocol below
TLS 1.2, no weak cipher, the certificate chain sent whole."""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.certs import CertAuthority

from .conftest import BackendFactory, ProxyFactory, config_doc

pytestmark = pytest.mark.slow
NAME = "scan.example"
WEAK = ("RC4", "3DES", "DES-", "NULL", "EXP", "ADH", "AECDH", "MD5", "CBC", "IDEA", "SEED")


@pytest.mark.parametrize("fast_lane", [True], ids=["lane"], indirect=True)
async def test_sslscan_finds_only_tls_1_2_and_1_3_and_strong_ciphers(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    ca = CertAuthority(tmp_path / "pki")
    cert, key = ca.leaf("scan", [NAME])
    web = await backends("web")
    doc = config_doc([("web", web.url, 1)])
    doc["tls"] = {"listen": "127.0.0.1:0", "certificates": [{"cert": str(cert), "key": str(key)}]}
    running = await proxy(doc)
    assert running.info.tls is not None
    target = f"127.0.0.1:{running.info.tls[1]}"
    out = await asyncio.to_thread(
        subprocess.run,
        ["sslscan", "--no-colour", f"--sni-name={NAME}", "--show-certificate", "--xml=-", target],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    root = ET.fromstring(out.stdout[out.stdout.index("<?xml") :])
    test = root.find("ssltest")
    assert test is not None
    enabled = {
        f"{p.get('type')}v{p.get('version')}"
        for p in test.iter("protocol")
        if p.get("enabled") == "1"
    }
    assert {p.lower() for p in enabled} == {"tlsv1.2", "tlsv1.3"}, enabled
    ciphers = [c.get("cipher") or "" for c in test.iter("cipher")]
    assert ciphers, out.stdout[-2000:]
    weak = [c for c in ciphers if any(w in c for w in WEAK)]
    assert weak == [], weak
    assert all(c.get("status") in ("preferred", "accepted") for c in test.iter("cipher"))
    renegotiation = test.find("renegotiation")
    assert renegotiation is None or renegotiation.get("supported") == "0"
    compression = test.find("compression")
    assert compression is None or compression.get("supported") == "0"
    # the chain: the leaf for the name, signed by the CA whose certificate is sent beside it
    subjects = [c.findtext("subject") or "" for c in test.iter("certificate")]
    assert any(NAME in s for s in subjects), subjects
