"""The admin listener: health, pool JSON, Prometheus metrics, status page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import ServeInfo, serve
from proxy.config import ConfigError
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc, write_config


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


async def test_pool_names_event_loop_and_parser(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)]))
    async with http.get(p.admin_url + "/-/pool") as response:
        runtime = (await response.json())["runtime"]
    assert runtime["event_loop"] in ("uvloop", "asyncio")
    assert runtime["parser"].startswith("httptools ")
    assert runtime["lbrec"]


async def test_admin_off_loopback_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "backends.json"
    write_config(path, config_doc([], admin="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="LBREC_ADMIN_TOKEN"):
        await serve(path, stop=asyncio.Event(), admin_token="")


async def test_admin_token_guards_reading_endpoints(
    backends: BackendFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    path = tmp_path / "backends.json"
    write_config(path, config_doc([("a", a.url, 1)], admin="0.0.0.0:0"))
    stop = asyncio.Event()
    ready: asyncio.Future[ServeInfo] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(path, stop=stop, ready=ready.set_result, admin_token="s3cret", drain_timeout=1)
    )
    try:
        info = await asyncio.wait_for(asyncio.shield(ready), 5)
        assert info.admin is not None
        url = f"http://127.0.0.1:{info.admin[1]}"
        for path_ in ("/-/pool", "/metrics", "/"):
            async with http.get(url + path_) as response:
                assert response.status == 401, path_
            async with http.get(url + path_, headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401, path_
            async with http.get(url + path_, headers={"Authorization": "Bearer s3cret"}) as ok:
                assert ok.status == 200, path_
        async with http.get(url + "/-/healthz") as response:
            assert response.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
