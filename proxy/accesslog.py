"""The access line: one per answered request, when ``--access-log`` is on (``event: access``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange
    from .pool import Backend

__all__ = ["log_access"]

_access_log = logging.getLogger("lbrec.proxy.access")


def log_access(
    exchange: Exchange, status: int, backend: Backend | None, elapsed: float, reason: str | None
) -> None:
    """Write the access line of ``exchange``, answered with ``status`` after ``elapsed``
    seconds: text, and the same fields as ``extra`` (JSON logs); ``reason`` for a 5xx only."""
    request = exchange.request
    client_ip = exchange.client.client_ip
    attempt_started = exchange.attempt_started  # the last attempt's (0: none was sent)
    request_id = exchange.request_id or b"-"
    agent = next((v for n, v in request.headers if n.lower() == b"user-agent"), None)
    duration_ms = round(elapsed * 1000, 2)
    # from the last attempt to the same instant ``elapsed`` ends at (never more than it)
    upstream = elapsed - (attempt_started - exchange.started) if attempt_started else None
    upstream_ms = round(upstream * 1000, 2) if upstream is not None else None
    method = request.method.decode("latin-1")
    path = request.target.decode("latin-1")
    name = backend.name if backend else None
    shown = reason if reason is not None and status >= 500 else None
    extra: dict[str, object] = {
        "event": "access",
        "client": client_ip,
        "method": method,
        "path": path,
        "status": status,
        "backend": name,
        "instance": backend.instance or backend.key if backend else None,
        "duration_ms": duration_ms,
        "upstream_ms": upstream_ms,
        "attempts": exchange.attempts,
        "bytes": exchange.client.bytes_out - exchange.bytes_before,
        "user_agent": agent.decode("latin-1") if agent is not None else None,
        "request_id": request_id.decode("latin-1"),
    }
    if shown is not None:
        extra["reason"] = shown
    _access_log.info(
        "%s %s %s %d %s %.2fms%s",
        client_ip,
        method,
        path,
        status,
        name or "-",
        duration_ms,
        f" ({shown})" if shown is not None else "",
        extra=extra,
    )
