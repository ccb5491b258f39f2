"""Issue 23 over HTTP/2 (curl --http2 on the TLS listener: each stream is a Downstream of the
same Exchange): admission with a request body arriving meanwhile (flow control), 429, 413;
and a client that goes away while its request waits in admission."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support.certs import CertAuthority

from .conftest import BackendFactory, ProxyFactory
from .features_support import curl, htpasswd, routed_doc
from .http2.support import H2Client

SHOP = "shop.example.com"


def _doc(url: str, ca: CertAuthority, route: dict[str, Any]) -> dict[str, Any]:
    cert, key = ca.leaf("shop", [SHOP])
    doc = routed_doc([("web", url, 1)], [{"host": SHOP, "backends": ["web"], **route}])
    doc["tls"] = {"listen": "127.0.0.1:0", "certificates": [{"cert": str(cert), "key": str(key)}]}
    return doc


async def test_admission_over_http2_with_a_body_held_meanwhile(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    web = await backends("web")
    ca = CertAuthority(tmp_path / "pki")
    htpasswd(tmp_path / "users", "alice", "pw")
    route = {
        "auth": {"basic": {"users_file": "users"}},
        "rate_limit": {"requests": 4, "per": "1m"},
        "max_body": "512k",
    }
    running = await proxy(_doc(web.url, ca, route))
    assert running.info.tls is not None
    tls = running.info.tls[1]
    h2 = ("--http2", "--cacert", str(ca.pem))
    (tmp_path / "body").write_bytes(b"b" * 300_000)  # over the stream's window: paused
    body = ("--data-binary", f"@{tmp_path / 'body'}")
    posted = await curl(tls, "/p", *h2, "-u", "alice:pw", *body, host=SHOP, https=True)
    assert (posted.status, posted.version) == (200, "2") and b'"size": 300000' in posted.body
    refused = await curl(tls, "/", *h2, "-u", "alice:wrong", host=SHOP, https=True)
    assert refused.status == 401 and refused.header("www-authenticate") is not None
    # over max_body by its content-length: 413 before a byte of the body is taken (curl
    # 7.88 reports the RST_STREAM(NO_ERROR) that stops its upload as an error: h2's client)
    client = await H2Client.connect(ca, tls, name=SHOP)
    try:
        auth = ("authorization", "Basic YWxpY2U6cHc=")
        fields = client.request_headers("/p", "POST", SHOP, [auth, ("content-length", "600000")])
        large = await client.response(await client.start(fields, end=False))
    finally:
        await client.close()
    assert large.status == 413 and large.body == b"Content Too Large\n"
    statuses = [
        (await curl(tls, "/", *h2, "-u", "alice:pw", host=SHOP, https=True)).status
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # the 1st POST took a token; 401 and 413 did not
    assert web.hits == 4


async def test_a_client_gone_during_the_hold_ends_its_exchange(
    proxy: ProxyFactory, backends: BackendFactory, tmp_path: Path
) -> None:
    web = await backends("web")
    route = {"host": SHOP, "backends": ["web"], "rate_limit": {"requests": 100, "concurrency": 1}}
    running = await proxy(routed_doc([("web", web.url, 1)], [route]))
    (tmp_path / "maintenance.json").write_text(
        '{"version": 1, "routes": {"shop.example.com/": {"since": 1, "hold": 30}}}'
    )
    server = running.info.server
    for _ in range(100):
        if server.gate.state.active:
            break
        await asyncio.sleep(0.05)
    port = running.info.listen[1]
    gone = await curl(port, "/", "--max-time", "1.5", host=SHOP)
    assert gone.status == 0  # curl gave up while its request was held
    for _ in range(100):
        if server.gate.waiting == 0:
            break
        await asyncio.sleep(0.05)
    assert server.gate.waiting == 0 and web.hits == 0
    assert server.route_figures.of(f"{SHOP}/").status[4] == 1  # the 499
    (tmp_path / "maintenance.json").unlink()
    for _ in range(100):
        if not server.gate.state.active:
            break
        await asyncio.sleep(0.05)
    assert (await curl(port, "/", host=SHOP)).status == 200  # no slot was left taken
