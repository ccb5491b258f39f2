"""Issue 22 end to end over TLS: a real proxy with its TLS listener on 127.0.0.1, certificates
from a test CA, real backends; clients: Python's ssl (aiohttp) and curl (HTTP/1.1 and HTTP/2)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import ResolveResult

from tests.support.certs import CertAuthority
from tests.support.pebble import free_port

from .conftest import BackendFactory, ProxyFactory, RunningProxy, config_doc


def _doc(tmp_path: Path, web: str, api: str, ca: CertAuthority) -> dict[str, Any]:
    ca.leaf("shop", ["shop.example.com"])
    ca.leaf("admin", ["admin.example.com"])
    doc = config_doc([("web", web, 1), ("api", api, 1)])
    doc["routes"] = [
        {"host": "shop.example.com", "backends": ["web"]},
        {"host": "shop.example.com", "path": "/api/", "backends": ["api"]},
        {"host": "admin.example.com", "backends": ["web"], "tls": "required"},
    ]
    doc["tls"] = {
        "listen": "127.0.0.1:0",
        "certificates": [
            {"cert": str(ca.folder / "shop.pem"), "key": str(ca.folder / "shop.key")},
            {"cert": "pki/admin.pem", "key": "pki/admin.key"},  # relative to backends.json
        ],
        "hsts": 15552000,
    }
    return doc


def _curl(
    running: RunningProxy,
    ca: CertAuthority,
    host: str,
    path: str,
    *extra: str,
    port: int | None = None,
) -> dict[str, Any]:
    if port is None:
        assert running.info.tls is not None
        port = running.info.tls[1]
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(ca.pem),
            "--resolve",
            f"{host}:{port}:127.0.0.1",
            "-w",
            "\\n%{http_code} %{http_version}",
            "-D",
            "-",
            *extra,
            f"https://{host}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    lines = out.stdout.rstrip("\n").split("\n")
    code, version = lines[-1].split()
    return {
        "status": int(code),
        "version": version,
        "text": "\n".join(lines[:-1]),
        "err": out.stderr,
    }


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


async def test_https_routes_over_http1_and_http2(
    proxy: ProxyFactory, backends: BackendFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    web, api = await backends("web"), await backends("api")
    running = await proxy(_doc(tmp_path, web.url, api.url, ca))
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        answer = await asyncio.to_thread(_curl, running, ca, "shop.example.com", "/api/x", flag)
        assert (answer["status"], answer["version"]) == (200, version), answer
        assert "x-backend: api" in answer["text"].lower()
        assert "strict-transport-security: max-age=15552000" in answer["text"].lower()
        body = json.loads(answer["text"].split("\n\n", 1)[1])
        assert body["headers"]["X-Forwarded-Proto"] == "https"
        answer = await asyncio.to_thread(_curl, running, ca, "shop.example.com", "/", flag)
        assert answer["status"] == 200 and "x-backend: web" in answer["text"].lower()
    # a certificate relative to backends.json serves too
    answer = await asyncio.to_thread(_curl, running, ca, "admin.example.com", "/")
    assert answer["status"] == 200


async def test_plain_http_is_redirected_and_sni_must_match_host(
    proxy: ProxyFactory, backends: BackendFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    web, api = await backends("web"), await backends("api")
    running = await proxy(_doc(tmp_path, web.url, api.url, ca))
    assert running.info.tls is not None
    tls_port = running.info.tls[1]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{running.url}/cart?x=1", headers={"Host": "shop.example.com"}, allow_redirects=False
        ) as response:
            assert response.status == 308
            assert response.headers["Location"] == f"https://shop.example.com:{tls_port}/cart?x=1"
        context = ssl.create_default_context(cafile=str(ca.pem))
        connector = aiohttp.TCPConnector(ssl=context, resolver=_Loopback())
        async with aiohttp.ClientSession(connector=connector) as https:
            url = f"https://shop.example.com:{tls_port}/"
            async with https.get(url, headers={"Host": "admin.example.com"}) as response:
                assert response.status == 421  # connected for shop, asks for admin
                assert "this connection is for shop.example.com" in await response.text()
            async with https.get(url) as response:
                assert response.status == 200 and response.headers["X-Backend"] == "web"
    assert web.seen_headers and all("admin" not in h.get("Host", "") for h in web.seen_headers)


async def test_a_new_certificate_serves_without_a_new_listener(
    proxy: ProxyFactory, backends: BackendFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    web, api = await backends("web"), await backends("api")
    doc = _doc(tmp_path, web.url, api.url, ca)
    running = await proxy(doc)
    server = running.info.server
    assert server.certs.for_name("new.example.com") is None
    ca.leaf("new", ["new.example.com"])
    doc["tls"]["certificates"].append({"cert": "pki/new.pem", "key": "pki/new.key"})
    doc["routes"].append({"host": "new.example.com", "backends": ["api"]})
    await running.reload(doc, until=lambda s: s.certs.for_name("new.example.com") is not None)
    answer = await asyncio.to_thread(_curl, running, ca, "new.example.com", "/")
    assert answer["status"] == 200 and "x-backend: api" in answer["text"].lower()
    # a broken renewal keeps the previous certificate serving
    (ca.folder / "new.pem").write_text("truncated\n")
    doc["routes"].append({"host": "other.example.com", "backends": ["api"]})
    await running.reload(doc, until=lambda s: bool(s.certs.errors))
    answer = await asyncio.to_thread(_curl, running, ca, "new.example.com", "/")
    assert answer["status"] == 200


async def test_a_reload_opens_moves_and_closes_the_tls_listener(
    proxy: ProxyFactory, backends: BackendFactory, ca: CertAuthority, tmp_path: Path
) -> None:
    """`lbrec up` serves before its first pass has written ``tls:``: the TLS listener opens at
    the reload that brings it (moves with ``tls.listen``, closes when ``tls:`` goes)."""
    web, api = await backends("web"), await backends("api")
    doc = _doc(tmp_path, web.url, api.url, ca)
    tls = doc.pop("tls")
    running = await proxy(doc)
    assert running.info.tls is None
    server = running.info.server
    ports = (free_port(), free_port())
    for port in ports:
        doc["tls"] = {**tls, "listen": f"127.0.0.1:{port}"}
        await running.reload(doc, until=lambda s, p=port: s.tls_port == p)  # type: ignore[misc]
        assert server.tls_port == port
        answer = await asyncio.to_thread(
            _curl, running, ca, "shop.example.com", "/api/", "--http2", port=port
        )
        assert (answer["status"], answer["version"]) == (200, "2"), answer
        async with aiohttp.ClientSession() as http:
            url = f"{running.url}/x"
            headers = {"Host": "shop.example.com"}
            async with http.get(url, headers=headers, allow_redirects=False) as response:
                assert response.headers["Location"] == f"https://shop.example.com:{port}/x"
    with pytest.raises(ConnectionRefusedError):  # the first port closed when it moved
        socket.create_connection(("127.0.0.1", ports[0]), 2)
    del doc["tls"]
    await running.reload(doc, until=lambda s: s.tls_port is None)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ports[1]), 2)


class _Loopback(aiohttp.abc.AbstractResolver):
    """Every name on 127.0.0.1 (the test's own DNS): TLS still checks the name."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None
