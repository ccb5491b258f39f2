"""EDGE. ``POST /-/sync``: the forge webhook of ``lbrec up --repo``, as aiohttp routes.

Served on ``up``'s control socket (the proxy's admin listener forwards the call there) or, in
tests, on any aiohttp app. What a call means is decided in core/webhooks.py; this module reads
the request, logs the verdict with its source, and triggers the sync loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core.webhooks import (
    Delivery,
    DeliveryMemory,
    Outcome,
    Verdict,
    WebhookSecret,
    verify_delivery,
)

if TYPE_CHECKING:  # aiohttp loads only when `lbrec up` serves it (a fast CLI)
    from aiohttp import web

__all__ = ["sync_webhook"]

_webhook_log = logging.getLogger("lbrec.webhook")


def sync_webhook(
    trigger: Callable[[], None],
    token: str,
    *,
    branch: str,
    clock: Callable[[], float] = time.time,
    peer_header: str | None = None,
) -> list[web.RouteDef]:
    """``POST /-/sync`` on the admin listener: a forge webhook deploys at once.

    Each call is verified by :func:`reconciler.core.webhooks.verify_delivery` (GitHub,
    Gitea/Forgejo, GitLab, Standard Webhooks and ``Authorization: Bearer``, all keyed on
    ``token``; pushes to another branch than ``branch`` are ignored; replays refused) and logged
    with its verdict and source address. Without a token configured the endpoint refuses every
    call (403), so it can never be left open; a ``whsec_`` token that is not base64 raises
    :class:`UsageError` here.
    ``peer_header``: served on ``up``'s control socket, where the proxy forwards the call, the
    caller's address is in this header (set by the proxy, never by the caller).
    """
    secret = WebhookSecret.parse(token)
    memory = DeliveryMemory()

    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        source = (
            request.headers.get(peer_header, "") if peer_header else request.remote
        ) or "unknown"
        try:
            body = await request.read() if secret.token else b""
        except web.HTTPRequestEntityTooLarge as err:
            _log_webhook(Verdict(Outcome.REFUSED, 413, f"body: {err.text}"), request, source)
            raise
        delivery = Delivery(request.method, request.headers, body, now=clock(), source=source)
        verdict = verify_delivery(delivery, secret=secret, branch=branch, memory=memory)
        _log_webhook(verdict, request, source)
        if verdict.sync:
            trigger()
        return web.Response(status=verdict.status, text=f"{verdict.reason}\n")

    return [web.post("/-/sync", handler)]


def _log_webhook(verdict: Verdict, request: web.Request, source: str) -> None:
    fields: dict[str, object] = {
        "event": "webhook",
        "outcome": verdict.outcome.value,
        "status": verdict.status,
        "reason": verdict.reason,
        "source": source,
        "scheme": verdict.scheme.value if verdict.scheme else None,
        "delivery": verdict.delivery_id,
    }
    if "X-Forwarded-For" in request.headers:  # behind a TLS proxy; as told, not verified
        fields["forwarded_for"] = request.headers["X-Forwarded-For"]
    level = logging.WARNING if verdict.outcome is Outcome.REFUSED else logging.INFO
    _webhook_log.log(
        level,
        "webhook %s (%d) from %s%s: %s",
        verdict.outcome.value,
        verdict.status,
        source,
        f" via {verdict.scheme.value}" if verdict.scheme else "",
        verdict.reason,
        extra=fields,
    )
