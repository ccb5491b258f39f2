"""Passive health: failed attempts count against a backend, and past ``passive.max_fails`` in a
row it leaves the rotation for ``passive.cooldown`` seconds (as nginx's max_fails /
fail_timeout), never the last one in rotation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import Backend
    from .server import ProxyServer

__all__ = ["failed"]

_log = logging.getLogger("lbrec.proxy")


def failed(server: ProxyServer, backend: Backend, reason: str) -> None:
    """A failed attempt at ``backend`` (``reason`` for the log)."""
    backend.errors += 1
    settings = server.pool.config.passive
    if settings.max_fails == 0 or backend.ejected:
        return
    backend.fails += 1
    if backend.fails < settings.max_fails:
        return
    backend.fails = 0
    if server.pool.balancer.eligible == (backend.key,):
        # Like nginx with a single server: ejecting the last backend in rotation would turn
        # partial failure into a total outage. Active checks still take it down if dead.
        return
    backend.ejected = True
    server.ejections += 1
    backend.eject_handle = server.loop.call_later(settings.cooldown, _readmit, server, backend)
    _log.warning(
        "backend %s ejected for %.1fs after %d consecutive failures (last: %s)",
        backend.name,
        settings.cooldown,
        settings.max_fails,
        reason,
        extra={"event": "eject", "backend": backend.name, "reason": reason},
    )
    _refresh_if_current(server, backend)


def _readmit(server: ProxyServer, backend: Backend) -> None:
    backend.eject_handle = None
    backend.ejected = False
    _log.info(
        "backend %s back from passive ejection",
        backend.name,
        extra={"event": "readmit", "backend": backend.name},
    )
    _refresh_if_current(server, backend)


def _refresh_if_current(server: ProxyServer, backend: Backend) -> None:
    pool = server.pool
    if pool.backends.get(backend.key) is backend:
        pool.refresh(backend)
