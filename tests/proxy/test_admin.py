"""The admin listener: health, pool JSON, Prometheus metrics, status page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

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
        if s.labels == {"backend": "a", "container": "a", "state": "up"}
    ]
    assert states[0].value == 1.0

    async with http.get(p.admin_url + "/") as response:
        page = await response.text()
        assert response.content_type == "text/html"
    assert "<title>lbrec proxy abc123</title>" in page
    embedded = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    assert embedded["generation"] == "abc123"
    assert [row["name"] for row in embedded["backends"]] == ["a", "b"]


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


async def test_stats_document_and_classified_check(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    p = await proxy(config_doc([("a", a.url, 3), ("b", b.url, 1)], generation="g1"))
    for _ in range(8):
        async with http.get(p.url + "/x") as response:
            assert response.status == 200
    async with http.get(p.url + "/status/404") as response:
        assert response.status == 404
    await b.stop()  # nothing listens on b's port now: its checks fail to connect

    async def b_check() -> dict[str, Any]:
        while True:
            async with http.get(p.admin_url + "/-/stats") as response:
                assert response.headers["Cache-Control"] == "no-store"
                doc: dict[str, Any] = await response.json()
            row = {r["name"]: r for r in doc["backends"]}["b"]
            if row["state"] == "down":
                return doc
            await asyncio.sleep(0.05)

    doc = await asyncio.wait_for(b_check(), 5)
    rows = {r["name"]: r for r in doc["backends"]}
    check = rows["b"]["check"]
    assert check["ok"] is False and check["code"] == "L4CON"
    assert check["reason"] == "connection refused"
    assert (
        check["summary"].startswith("L4CON connection refused in ")
        and "ssl" not in check["summary"]
    )
    assert "ClientConnectorError" in check["detail"]  # the raw text stays, as detail
    assert rows["a"]["check"]["code"] == "L7OK" and rows["a"]["check"]["reason"] == "200"
    assert (
        rows["a"]["status"]["2xx"] >= 5
        and rows["a"]["status"]["4xx"] + rows["b"]["status"]["4xx"] == 1
    )
    assert rows["a"]["p50_ms"] is not None and rows["a"]["p99_ms"] >= rows["a"]["p50_ms"]
    assert rows["a"]["expected_share"] == 1.0 and rows["b"]["expected_share"] == 0.0
    assert rows["a"]["in_rotation"] and not rows["b"]["in_rotation"]
    assert doc["totals"]["requests"] == 9 and doc["totals"]["up"] == 1
    assert doc["generation"] == "g1" and doc["version"] and doc["bucket_s"] == 5.0
    assert set(rows["a"]["series"]) == {"at", "rps", "eps", "p50", "p99"}

    async with http.get(p.admin_url + "/-/pool") as response:
        pool_row = {r["name"]: r for r in (await response.json())["backends"]}["b"]
    last = pool_row["last_check"]
    assert {"ok", "at", "detail"} <= last.keys() and last["code"] == "L4CON"


async def test_status_page_cannot_be_closed_by_a_revision_message(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    evil = "</script><script>alert(1)</script>"
    p = await proxy(config_doc([("a", a.url, 1)], revision={"commit": "c0ffee", "message": evil}))
    async with http.get(p.admin_url + "/") as response:
        page = await response.text()
    assert evil not in page and "\\u003c/script>" in page
