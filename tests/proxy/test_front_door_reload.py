"""Issue 22: a certificate renewal and a route change every half second under a bounded load
over HTTPS, HTTP/1.1 (keep-alive and new connections) and HTTP/2: 0 failed requests."""

from __future__ import annotations

import asyncio
import copy
import ssl
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import ResolveResult

from lbrec.proxy.server import ProxyServer
from tests.support.certs import CertAuthority

from .conftest import BackendFactory, ProxyFactory, RunningProxy, config_doc
from .http2.support import H2Client

NAME = "a.example"
DURATION = 4.0  # seconds of load (bounded: every loop stops then)


class _Loopback(aiohttp.abc.AbstractResolver):
    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host="127.0.0.1", port=port, family=2, proto=0, flags=0)
        ]

    async def close(self) -> None:
        return None


async def _h1(running: RunningProxy, ca: CertAuthority, stop: float, fresh: bool) -> Counter[str]:
    """Requests over one keep-alive connection, or a new TLS connection each (``fresh``)."""
    assert running.info.tls is not None
    url = f"https://{NAME}:{running.info.tls[1]}/api/x"
    context = ssl.create_default_context(cafile=str(ca.pem))
    seen: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(ssl=context, resolver=_Loopback(), force_close=fresh)
    async with aiohttp.ClientSession(connector=connector) as http:
        while time.monotonic() < stop:
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    await response.read()
                    seen[f"{response.status} {response.headers.get('X-Backend')}"] += 1
            except (aiohttp.ClientError, TimeoutError) as err:
                seen[f"error {type(err).__name__}"] += 1
    return seen


async def _h2(running: RunningProxy, ca: CertAuthority, stop: float) -> Counter[str]:
    assert running.info.tls is not None
    seen: Counter[str] = Counter()
    client = await H2Client.connect(ca, running.info.tls[1], name=NAME)
    try:
        while time.monotonic() < stop:
            response = await client.get("/api/x", authority=NAME)
            backend = response.header(b"x-backend") or b"-"
            seen[f"{response.status} {backend.decode()}"] += 1
    finally:
        await client.close()
    return seen


@pytest.mark.slow
async def test_renewals_and_route_changes_under_load_fail_nothing(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    ca = CertAuthority(tmp_path / "pki")
    web, api = await backends("web"), await backends("api")
    cert, key = ca.leaf("a0", [NAME])
    doc = config_doc([("web", web.url, 1), ("api", api.url, 1)])
    doc["routes"] = [
        {"host": NAME, "backends": ["web"]},
        {"host": NAME, "path": "/api/", "backends": ["api"]},
    ]
    doc["tls"] = {"listen": "127.0.0.1:0", "certificates": [{"cert": str(cert), "key": str(key)}]}
    running = await proxy(doc)
    server = running.info.server
    stop = time.monotonic() + DURATION
    load = [
        asyncio.create_task(_h1(running, ca, stop, fresh=False)),
        asyncio.create_task(_h1(running, ca, stop, fresh=True)),
        asyncio.create_task(_h2(running, ca, stop)),
    ]
    changes = 0
    serials: set[str] = set()
    while time.monotonic() < stop - 0.5:
        await asyncio.sleep(0.5)
        changes += 1
        new = copy.deepcopy(doc)
        # a renewal: a new certificate in a new file, as the ACME store writes one
        renewed_cert, renewed_key = ca.leaf(f"a{changes}", [NAME])
        new["tls"]["certificates"] = [{"cert": str(renewed_cert), "key": str(renewed_key)}]
        # and a route change: /api/ goes to api alone, then to api and web
        new["routes"][1]["backends"] = ["api", "web"] if changes % 2 else ["api"]
        await running.reload(new, until=partial(_serving, cert_path=str(renewed_cert)))
        current = server.certs.for_name(NAME)
        assert current is not None
        serials.add(current.serial)
    results = [await task for task in load]
    total: Counter[str] = Counter()
    for seen in results:
        total.update(seen)
    print(f"answers over {changes} renewals and route changes: {dict(total)}")
    failed = {k: v for k, v in total.items() if not k.startswith("200 ")}
    assert failed == {}, total
    assert all(sum(seen.values()) > 10 for seen in results), results
    assert changes >= 5 and len(serials) == changes
    assert total["200 web"] > 0 and total["200 api"] > 0  # both route pools served


def _serving(server: ProxyServer, cert_path: str) -> bool:
    current = server.certs.for_name(NAME)
    return current is not None and current.cert_path == cert_path
