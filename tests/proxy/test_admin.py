"""The admin listener: health, pool JSON, Prometheus metrics, status page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbrec.proxy.app import ServeInfo, ServeOptions, serve
from lbrec.proxy.config import ConfigError
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
    assert runtime["code"] in ("mypyc", "interpreted")
    assert runtime["parser"].startswith("httptools ")
    assert runtime["lbrec"]


async def test_admin_off_loopback_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "backends.json"
    write_config(path, config_doc([], admin="0.0.0.0:0"))
    with pytest.raises(ConfigError, match="LBREC_ADMIN_TOKEN"):
        await serve(path, ServeOptions(admin_token=""), stop=asyncio.Event())


async def test_admin_token_guards_reading_endpoints(
    backends: BackendFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    path = tmp_path / "backends.json"
    write_config(path, config_doc([("a", a.url, 1)], admin="0.0.0.0:0"))
    stop = asyncio.Event()
    ready: asyncio.Future[ServeInfo] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            path,
            ServeOptions(admin_token="s3cret", drain_timeout=1),
            stop=stop,
            ready=ready.set_result,
        )
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


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    """The value of one sample (``name`` with ``labels`` among its labels)."""
    values = [
        s.value
        for s in families[family].samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(values) == 1, (family, name, labels, families[family].samples)
    return float(values[0])


async def test_metrics_back_latency_and_slo_panels(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """Histograms per backend and for the listener, answers by status class, 503s for lack
    of a backend by reason, build info, the last reload, process metrics."""
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)], generation="g1", revision={"commit": "c0ffee"}))
    for path in ("/x", "/x", "/status/404", "/status/500"):
        async with http.get(p.url + path) as response:
            await response.read()
    async with http.get(p.admin_url + "/metrics") as response:
        families = _families(await response.text())

    hist = "lbrec_proxy_backend_response_seconds"
    assert _sample(families, hist, hist + "_count", backend="a", worker="0") == 4
    assert _sample(families, hist, hist + "_bucket", backend="a", le="+Inf") == 4
    assert 0 < _sample(families, hist, hist + "_sum", backend="a") < 4
    responses = "lbrec_proxy_backend_responses"
    by_class = {
        s.labels["code"]: s.value
        for s in families[responses].samples
        if s.name == responses + "_total"
    }
    assert by_class == {"other": 0, "1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1}
    listener = "lbrec_proxy_request_duration_seconds"
    assert _sample(families, listener, listener + "_count") == 4
    assert (
        _sample(families, "lbrec_proxy_responses", "lbrec_proxy_responses_total", code="2xx") == 2
    )
    info = _sample(
        families, "lbrec_build_info", "lbrec_build_info", generation="g1", revision="c0ffee"
    )
    assert info == 1.0
    assert (
        _sample(families, "lbrec_proxy_last_reload_success", "lbrec_proxy_last_reload_success") == 1
    )
    assert "process_cpu_seconds" in families and "process_resident_memory_bytes" in families

    # No backend left: 503s counted by reason; a rejected file flips the reload result.
    await p.reload(config_doc([], generation="g2"), until=lambda s: not s.pool.backends)
    async with http.get(p.url + "/x") as response:
        assert response.status == 503
    p.config_path.write_text("{broken")
    for _ in range(100):
        if p.info.server.last_reload_error:
            break
        await asyncio.sleep(0.05)
    async with http.get(p.admin_url + "/metrics") as response:
        families = _families(await response.text())
    unavailable = "lbrec_proxy_no_backend"
    assert (
        _sample(families, unavailable, unavailable + "_total", reason="no_backends_configured") == 1
    )
    assert _sample(families, unavailable, unavailable + "_total", reason="no_healthy_backend") == 0
    assert (
        _sample(families, "lbrec_proxy_responses", "lbrec_proxy_responses_total", code="5xx") == 2
    )
    assert (
        _sample(families, "lbrec_proxy_last_reload_success", "lbrec_proxy_last_reload_success") == 0
    )
    assert _sample(families, "lbrec_build_info", "lbrec_build_info", generation="g2") == 1.0
