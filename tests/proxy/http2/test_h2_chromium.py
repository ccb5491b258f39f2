"""Chromium over HTTP/2: a page and 30 fetches in parallel, multiplexed on the proxy's TLS
listener (proxy/http2), the certificate pinned by its key (no warning bypassed), a.example
mapped to 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.proxy.conftest import BackendFactory
from tests.proxy.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _browser_missing
from tests.support.certs import CertAuthority

from .support import NAME, h2_proxy

pytestmark = pytest.mark.timeout(120)


def _spki_pin(pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_chromium_loads_over_http2(tmp_path: Path, backends: BackendFactory) -> None:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_BROWSER"):
            pytest.fail(f"the HTTP/2 browser test needs Chromium: {missing}")
        pytest.skip(f"needs Chromium: {missing}")
    from playwright.async_api import async_playwright

    ca = CertAuthority(tmp_path / "pki")
    backend = await backends("b1")
    async with h2_proxy(ca, backend.url) as proxy:
        pin = _spki_pin(ca.folder / "site.pem")
        async with async_playwright() as driver:
            context = await driver.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    *CHROMIUM_ARGS,
                    f"--host-resolver-rules=MAP {NAME} 127.0.0.1",
                    f"--ignore-certificate-errors-spki-list={pin}",
                ],
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                url = f"https://{NAME}:{proxy.tls_port}"
                response = await page.goto(f"{url}/page?x=1")
                assert response is not None and response.status == 200
                assert json.loads(await response.text())["path"] == "/page?x=1"
                result: Any = await page.evaluate(
                    """async () => {
                        const paths = Array.from({length: 30}, (_, i) => `/r${i}`);
                        const answers = await Promise.all(paths.map(p => fetch(p)));
                        const bodies = await Promise.all(answers.map(a => a.json()));
                        const entries = performance.getEntriesByType('resource');
                        return {
                            nav: performance.getEntriesByType('navigation')[0].nextHopProtocol,
                            statuses: answers.map(a => a.status),
                            paths: bodies.map(b => b.path),
                            protocols: [...new Set(entries.map(e => e.nextHopProtocol))],
                        };
                    }"""
                )
            finally:
                await context.close()
        assert result["nav"] == "h2"
        assert result["statuses"] == [200] * 30
        assert result["paths"] == [f"/r{i}" for i in range(30)]
        assert result["protocols"] == ["h2"]
        # multiplexed: the page's connection, and one for fetch()'s requests (Chromium keeps
        # requests with and without credentials apart), never one per request
        assert len(proxy.made) <= 2
