"""The admin listener: health, pool JSON, Prometheus metrics, status page."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc


async def test_admin_endpoints(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    doc = config_doc(
        [("a", a.url, 2), ("b", b.url, 0)],
        generation="abc123",
        revision={"commit": "deadbeef", "author": "ops"},
    )
    p = await proxy(doc)
    for _ in range(4):
        async with http.get(p.url + "/x") as response:
            assert response.status == 200

    async with http.get(p.admin_url + "/-/healthz") as response:
        assert response.status == 200 and (await response.text()).strip() == "ok"

    async with http.get(p.admin_url + "/-/pool") as response:
        pool = await response.json()
    assert pool["generation"] == "abc123"
    assert pool["revision"]["commit"] == "deadbeef"
    rows = {row["name"]: row for row in pool["backends"]}
    assert rows["a"]["weight"] == 2 and rows["a"]["requests"] == 4 and rows["a"]["errors"] == 0
    assert rows["a"]["state"] == "up" and rows["a"]["in_rotation"] is True
    assert rows["b"]["in_rotation"] is False and rows["b"]["requests"] == 0
    assert rows["a"]["inflight"] == 0
    assert {"last_check", "connections"} <= rows["a"].keys()

    async with http.get(p.admin_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        s.labels["backend"]: s.value
        for s in families["lbrec_proxy_backend_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests == {"a": 4.0, "b": 0.0}
    assert "lbrec_proxy_reloads" in families
    states = [
        s
        for s in families["lbrec_proxy_backend_state"].samples
        if s.labels == {"backend": "a", "state": "up"}
    ]
    assert states[0].value == 1.0

    async with http.get(p.admin_url + "/") as response:
        page = await response.text()
        assert response.content_type == "text/html"
    assert "abc123" in page and '<td class="n">a</td>' in page
