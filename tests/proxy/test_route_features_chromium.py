"""Issue 23 with a real browser: Chromium over HTTP/2 on the TLS listener gets compressed
answers it decodes itself, and the affinity cookie (HttpOnly, Secure, SameSite=Lax), which
it sends back on the requests that follow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.conftest import BackendFactory
from tests.proxy.http2.support import NAME, h2_proxy, pinned_chromium
from tests.support.certs import CertAuthority

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]  # a browser: not in --quick

FEATURES = {"compress": {"min_size": 0, "with_cookies": True}, "sticky": "cookie:lb-web"}


async def test_chromium_decodes_compressed_answers_and_keeps_the_cookie(
    tmp_path: Path, backends: BackendFactory
) -> None:
    ca = CertAuthority(tmp_path / "pki")
    backend = await backends("b1")
    async with (
        h2_proxy(ca, backend.url, defaults=FEATURES) as proxy,
        pinned_chromium(ca.folder / "site.pem", tmp_path / "profile", "issue 23's test") as context,
    ):
        page = context.pages[0] if context.pages else await context.new_page()
        url = f"https://{NAME}:{proxy.tls_port}"
        response = await page.goto(f"{url}/first")
        assert response is not None and response.status == 200
        headers = await response.all_headers()
        body = json.loads(await response.text())  # decoded by the browser
        result: Any = await page.evaluate(
            """async () => {
                const answers = await Promise.all([1, 2, 3].map(i => fetch(`/r${i}`)));
                return Promise.all(answers.map(a => a.json()));
            }"""
        )
        cookies = await context.cookies(url)
    assert headers["content-encoding"] in ("br", "zstd", "gzip")
    assert "accept-encoding" in headers["vary"].lower()
    assert body["path"] == "/first" and "lb-web" not in body["headers"].get("Cookie", "")
    pinned = [c for c in cookies if c["name"] == "lb-web"]
    assert len(pinned) == 1
    assert pinned[0]["httpOnly"] and pinned[0]["secure"] and pinned[0]["sameSite"] == "Lax"
    for answer in result:  # the browser sent the pin back on every request that followed
        assert f"lb-web={pinned[0]['value']}" in answer["headers"]["Cookie"]
