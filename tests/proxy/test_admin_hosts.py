"""The admin listener answers only to its own names, and tells browsers not to frame or sniff it
(issue 20 finding 11): a DNS-rebinding page (``Host: evil.example``) read ``/-/pool``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lbrec.proxy.admin import ADMIN_HOSTS_ENV, parse_admin_hosts
from lbrec.proxy.app import ServeInfo, ServeOptions, serve
from lbrec.proxy.config import ConfigError
from tests.proxy.conftest import BackendFactory, config_doc, write_config

READING = ("/-/pool", "/-/stats", "/metrics", "/")


@asynccontextmanager
async def _admin(
    tmp_path: Path,
    *,
    admin: str = "127.0.0.1:0",
    routes: Sequence[web.RouteDef] = (),
    token: str = "",
) -> AsyncIterator[str]:
    """A proxy whose admin listener binds ``admin``; yields its ``HOST:PORT``."""
    path = tmp_path / "backends.json"
    write_config(path, config_doc([], admin=admin))
    stop = asyncio.Event()
    ready: asyncio.Future[ServeInfo] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            path,
            ServeOptions(drain_timeout=1, admin_token=token, admin_routes=routes),
            stop=stop,
            ready=ready.set_result,
        )
    )
    try:
        info = await asyncio.wait_for(asyncio.shield(ready), 5)
        assert info.admin is not None
        yield f"{info.admin[0]}:{info.admin[1]}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _get(
    http: aiohttp.ClientSession, at: str, path: str, host: str | None, **headers: str
) -> tuple[int, str, dict[str, str]]:
    if host is not None:
        headers["Host"] = host
    async with http.get(f"http://{at}{path}", headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)


async def test_a_foreign_host_is_refused_on_every_reading_endpoint(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_HOSTS_ENV, raising=False)
    async with _admin(tmp_path) as at:
        port = at.rpartition(":")[2]
        for path in READING:
            for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}"):
                status, text, _ = await _get(http, at, path, host)
                assert status == 421, (path, host, status)
                assert f"Host {host!r} is not one of its names" in text, text
                assert ADMIN_HOSTS_ENV in text, text
        # The rebinding page cannot dress up either: a bad port, or garbage, is refused too.
        for host in (f"localhost:{port}x", "[::1", "a b", "localhost:99999"):
            assert (await _get(http, at, "/-/pool", host))[0] == 421, host
        # Liveness stays open to any Host (it says "ok" and nothing else).
        status, text, _ = await _get(http, at, "/-/healthz", f"evil.example:{port}")
        assert (status, text) == (200, "ok\n")


async def test_loopback_names_and_the_listeners_own_address_are_served(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_HOSTS_ENV, raising=False)
    async with _admin(tmp_path, admin="127.0.0.2:0") as at:
        port = at.rpartition(":")[2]
        hosts = [
            f"localhost:{port}",
            f"LocalHost.:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "localhost",
            f"127.0.0.2:{port}",  # the listener's own address
            f"0.0.0.0:{port}",  # what the reconciler sends for `admin: 0.0.0.0:8081`
            f"[::]:{port}",
            "localhost:2222",  # an ssh -L tunnel from another port
            None,  # no Host at all: not a browser (HTTP/1.0 tools)
        ]
        for host in hosts:
            for path in READING:
                status, _, _ = await _get(http, at, path, host)
                assert status == 200, (path, host, status)
        assert (await _get(http, at, "/-/pool", f"127.0.0.3:{port}"))[0] == 421


async def test_configured_admin_hosts_are_served(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_HOSTS_ENV, "lb.example.com, LB2.example.com. 192.0.2.10,[2001:db8::1]")
    async with _admin(tmp_path) as at:
        for host in (
            "lb.example.com",
            "lb.example.com:443",
            "lb2.example.com:8081",
            "192.0.2.10:8081",
            "[2001:db8::1]:8081",
            "localhost",  # loopback names stay
        ):
            assert (await _get(http, at, "/-/pool", host))[0] == 200, host
        for host in ("example.com", "x.lb.example.com", "lb.example.com.evil.example"):
            assert (await _get(http, at, "/-/pool", host))[0] == 421, host


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("lb.example.com:8081", "lb.example.com:8081"),
        ("*.example.com", "*.example.com"),
        ("https://lb.example.com", "https://lb.example.com"),
        ("ok.example.com,bad_name!", "bad_name!"),
        ("[2001:db8::1", "[2001:db8::1"),
    ],
)
def test_a_bad_admin_hosts_value_names_the_variable_and_the_value(value: str, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_admin_hosts(value)
    assert ADMIN_HOSTS_ENV in str(caught.value) and repr(bad) in str(caught.value)


def test_admin_hosts_parse() -> None:
    assert parse_admin_hosts("") == frozenset()
    assert parse_admin_hosts(" A.example.com., 10.0.0.1 [::2]") == {
        "a.example.com",
        "10.0.0.1",
        "::2",
    }


async def test_a_bad_admin_hosts_value_stops_the_proxy_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADMIN_HOSTS_ENV, "lb.example.com:443")
    with pytest.raises(ConfigError, match=ADMIN_HOSTS_ENV):
        async with _admin(tmp_path):
            pass


async def test_the_webhook_is_not_subject_to_the_host_check(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS proxy forwarding only POST /-/sync may pass its own Host: the webhook is
    authenticated by its signature, and a rebinding page learns nothing from its answer."""
    monkeypatch.delenv(ADMIN_HOSTS_ENV, raising=False)

    async def sync(request: web.Request) -> web.Response:
        return web.Response(status=202, text="sync triggered\n")

    async with (
        _admin(tmp_path, routes=[web.post("/-/sync", sync)]) as at,
        http.post(
            f"http://{at}/-/sync", headers={"Host": "lb.example.com"}, data=b"{}"
        ) as response,
    ):
        assert response.status == 202


async def test_security_headers_on_every_answer(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_HOSTS_ENV, raising=False)
    async with _admin(tmp_path, token="s3cret") as at:
        bearer = {"Authorization": "Bearer s3cret"}
        answers = [await _get(http, at, path, None, **bearer) for path in READING]
        answers.append(await _get(http, at, "/-/healthz", None))
        answers.append(await _get(http, at, "/-/pool", None))  # 401: no token
        answers.append(await _get(http, at, "/-/pool", "evil.example", **bearer))  # 421
        answers.append(await _get(http, at, "/nowhere", None, **bearer))  # 404
        assert [status for status, _, _ in answers] == [200, 200, 200, 200, 200, 401, 421, 404]
        for _, _, headers in answers:
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            csp = headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        page_csp = answers[3][2]["Content-Security-Policy"]
        assert "script-src 'sha256-" in page_csp and "connect-src 'self'" in page_csp
        assert "unsafe-eval" not in page_csp and "script-src 'unsafe-inline'" not in page_csp
        assert "script-src" not in answers[0][2]["Content-Security-Policy"]  # JSON: nothing runs


async def test_the_status_page_script_matches_its_policy(
    backends: BackendFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The page's only script is the one the policy's hash allows (Chromium checks the rest:
    tests/proxy/test_dashboard.py fails on any policy violation)."""
    import base64
    import hashlib
    import re

    async with _admin(tmp_path) as at:
        status, page, headers = await _get(http, at, "/", None)
    assert status == 200
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in headers["Content-Security-Policy"]
