"""Chromium over HTTP/2: a page and 30 fetches in parallel, multiplexed on the proxy's TLS
listener (proxy/http2), the certificate pinned by its key (no warning bypassed), a.example
mapped to 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.conftest import BackendFactory
from tests.support.certs import CertAuthority

from .support import NAME, h2_proxy, pinned_chromium

pytestmark = pytest.mark.timeout(120)


async def test_chromium_loads_over_http2(tmp_path: Path, backends: BackendFactory) -> None:
    ca = CertAuthority(tmp_path / "pki")
    backend = await backends("b1")
    async with (
        h2_proxy(ca, backend.url) as proxy,
        pinned_chromium(ca.folder / "site.pem", tmp_path / "profile", "the HTTP/2 test") as context,
    ):
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
        assert result["nav"] == "h2"
        assert result["statuses"] == [200] * 30
        assert result["paths"] == [f"/r{i}" for i in range(30)]
        assert result["protocols"] == ["h2"]
        # multiplexed: the page's connection, and one for fetch()'s requests (Chromium keeps
        # requests with and without credentials apart), never one per request
        assert len(proxy.made) <= 2
