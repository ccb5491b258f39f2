"""The GitOps webhook of `lbrec up` on the admin listener (an aiohttp app, no Docker)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lbrec.reconciler.runtime.webhook import sync_webhook

Client = TestClient[web.Request, web.Application]


async def _client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], token: str, calls: list[int]
) -> Client:
    app = web.Application()
    app.router.add_routes(sync_webhook(lambda: calls.append(1), token, branch="main"))
    client: Client = await aiohttp_client(app)
    return client


async def test_webhook_triggers_with_the_token(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    client = await _client(aiohttp_client, "s3cret", calls)
    response = await client.post("/-/sync", headers={"Authorization": "Bearer s3cret"})
    assert response.status == 202 and calls == [1]


async def test_webhook_refuses_a_bad_or_missing_token(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    client = await _client(aiohttp_client, "s3cret", calls)
    assert (await client.post("/-/sync")).status == 401
    bad = await client.post("/-/sync", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401 and calls == []
    assert (await client.get("/-/sync")).status == 405


async def test_webhook_without_a_configured_token_is_off(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    client = await _client(aiohttp_client, "", calls)
    response = await client.post("/-/sync", headers={"Authorization": "Bearer "})
    assert response.status == 403 and "LBREC_SYNC_TOKEN" in await response.text()
    assert calls == []


def test_up_with_the_webhook_on_requires_the_admin_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20 finding 11: the webhook is reached through a TLS proxy, whose connections come
    from a loopback peer; without an admin token its reading endpoints (the pool, with commit
    authors and internal addresses) were open to whatever that proxy forwards. With
    LBREC_SYNC_TOKEN set, `lbrec up` now refuses to start without LBREC_ADMIN_TOKEN, before
    anything is fetched or applied."""
    from lbrec.reconciler.runtime import up as up_module
    from lbrec.reconciler.runtime.options import RuntimeOptions

    def no_sync_loop(*_: object) -> NoReturn:
        raise AssertionError("the sync loop was built: up went on without an admin token")

    def no_docker(*_: object) -> NoReturn:
        raise AssertionError("docker was touched")

    monkeypatch.setattr(up_module, "build_sync_loop", no_sync_loop)
    monkeypatch.setenv("LBREC_SYNC_TOKEN", "t0ken")
    monkeypatch.delenv("LBREC_ADMIN_TOKEN", raising=False)
    options = RuntimeOptions(
        file=tmp_path / "desired-state.yaml", repo=str(tmp_path / "config.git")
    )
    ours, root = logging.getLogger("lbrec"), logging.getLogger()
    saved = (ours.handlers[:], ours.level, ours.propagate, root.handlers[:], root.level)
    try:
        code = up_module.run_up(options, no_docker)
    finally:
        ours.handlers[:], ours.level, ours.propagate = saved[0], saved[1], saved[2]
        root.handlers[:], root.level = saved[3], saved[4]
    assert code == 2
    err = capsys.readouterr().err
    assert "LBREC_SYNC_TOKEN is set but LBREC_ADMIN_TOKEN is not" in err, err
    assert "set LBREC_ADMIN_TOKEN" in err
