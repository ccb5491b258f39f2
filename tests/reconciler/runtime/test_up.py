"""The GitOps webhook of `lbrec up` on the admin listener (an aiohttp app, no Docker)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from lbrec.reconciler.runtime.up import sync_webhook

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
