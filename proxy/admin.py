"""The admin listener (aiohttp): ``/-/healthz``, ``/-/pool``, ``/-/stats``, ``/metrics`` and
the status page (``/``, see :mod:`proxy.dashboard`).

Counters live as plain ints on the backends (no cost on the request path); a custom
prometheus-client collector reads them at scrape time. A sampler task, owned by this app,
closes each backend's 5-second bucket (:mod:`proxy.stats`) for the status page's charts.

Who may read it (its own Host names, the token) and the headers every answer carries are in
:mod:`proxy.admin_guard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.registry import Collector

from .admin_guard import (
    ADMIN_HOSTS_ENV,
    host_middleware,
    parse_admin_hosts,
    security_headers,
    token_middleware,
)
from .cert_view import certificates_view
from .dashboard import PAGE_POLICY, render_page
from .health import ProbeResult
from .metrics import ProxyCollector, peer_figures
from .route_view import routes_view
from .server import ProxyServer
from .stats import BUCKET_S, BUCKETS, LATENCY_BOUNDS, STATUS_CLASSES, percentile

__all__ = [
    "ADMIN_HOSTS_ENV",
    "SERVER_KEY",
    "certificates_snapshot",
    "make_admin_app",
    "parse_admin_hosts",
    "pool_snapshot",
    "stats_snapshot",
]

SERVER_KEY = web.AppKey("proxy_server", ProxyServer)
_REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
# Awaited before /metrics is rendered: collectors whose figures come from elsewhere (lbrec up's)
_REFRESH_KEY = web.AppKey("metrics_refresh", tuple[Callable[[], Awaitable[None]], ...])


RATE_WINDOW_S = 10.0  # requests/s and errors/s on the status page
LATENCY_WINDOW_S = 60.0  # p50/p99 and the observed share of traffic
_STATE_POLL_S = 1.0  # time in state is exact to this


def _check_doc(check: ProbeResult) -> dict[str, Any]:
    return {
        "ok": check.ok,
        "at": check.at,
        "detail": check.detail,
        "code": check.code,
        "reason": check.reason,
        "summary": check.summary,
        "duration_ms": round(check.duration * 1000, 3),
    }


def certificates_snapshot(server: ProxyServer) -> dict[str, Any]:
    """The certificates the TLS listener serves, with the certificate manager's next renewal
    and last error (proxy/cert_view.py); never a key or a key's path."""
    tls = server.pool.config.tls
    keys = [str(server.config_dir / c.key) for c in tls.certificates] if tls is not None else []
    challenges = server.challenges
    return certificates_view(
        server.certs, challenges.folder if challenges is not None else None, key_paths=keys
    )


def pool_snapshot(server: ProxyServer) -> dict[str, Any]:
    """The JSON document of ``/-/pool``."""
    pool = server.pool
    config = pool.config
    eligible = set(pool.balancer.eligible)
    backends = []
    for backend in server.shown():
        check = backend.last_check
        totals = backend.stats.totals()
        backends.append(
            {
                "name": backend.name,
                "url": backend.url,
                "instance": backend.instance,
                "weight": backend.weight,
                "state": backend.state,
                "in_rotation": backend.key in eligible,
                "inflight": backend.inflight,
                "requests": backend.requests,
                "errors": backend.errors,
                "connections": backend.conns.opened,
                "idle_connections": len(backend.conns.idle),
                "last_check": None if check is None else _check_doc(check),
                "version": backend.version,
                "percent": backend.percent,
                # cumulative answers by status class and first-byte latency histogram
                # (bounds: latency_bounds below), for readers that judge a version
                "status_total": dict(zip(STATUS_CLASSES, totals[0], strict=True)),
                "latency_total": totals[1],
            }
        )
    return {
        "generation": config.generation,
        "revision": None if config.revision is None else config.revision.model_dump(),
        "digest": pool.digest,
        "reloads": server.reloads,
        "reload_errors": server.reload_errors,
        "last_reload_error": server.last_reload_error,
        "last_reload_at": server.last_reload_at,
        "uptime_s": round(time.time() - server.started_at, 3),
        "client_connections": len(server.connections),
        "refused_connections": server.refused_connections,
        "runtime": server.runtime,
        "latency_bounds": list(LATENCY_BOUNDS),
        "backends": backends,
        "tls": certificates_snapshot(server),
    }


def stats_snapshot(server: ProxyServer, *, now: float | None = None) -> dict[str, Any]:
    """The JSON document of ``/-/stats``: what the status page shows, refreshed in place.

    Rates cover the last :data:`RATE_WINDOW_S` seconds, percentiles and the observed share of
    traffic the last :data:`LATENCY_WINDOW_S`; ``series`` holds one point per closed bucket.
    """
    now = time.time() if now is None else now
    pool = server.pool
    config = pool.config
    eligible = pool.balancer.eligible
    weights = pool.balancer.weights
    rotation_total = sum(weights.get(key, 0) for key in eligible)
    shown = server.shown()
    recent = {}
    for backend in shown:
        backend.stats.observe_state(backend.state, now)
        requests, errors = backend.requests, backend.errors
        recent[id(backend)] = (
            backend.stats.window(span=RATE_WINDOW_S, now=now, requests=requests, errors=errors),
            backend.stats.window(span=LATENCY_WINDOW_S, now=now, requests=requests, errors=errors),
        )
    share_total = sum(minute.requests for _, minute in recent.values())
    rows = []
    status_sum = [0] * len(STATUS_CLASSES)
    for backend in shown:
        stats = backend.stats
        rate, minute = recent[id(backend)]
        in_rotation = backend.key in eligible and pool.backends.get(backend.key) is backend
        p50, p99 = percentile(minute.latency, 0.5), percentile(minute.latency, 0.99)
        split = stats.status_totals()
        status_sum = [a + b for a, b in zip(status_sum, split, strict=True)]
        check = backend.last_check
        rows.append(
            {
                "key": backend.key,
                "name": backend.name,
                "instance": backend.instance,
                "version": backend.version,
                "percent": backend.percent,
                "url": backend.url,
                "state": backend.state,
                "since": round(stats.since, 3),
                "in_rotation": in_rotation,
                "weight": backend.weight,
                "expected_share": round(weights.get(backend.key, 0) / rotation_total, 4)
                if in_rotation and rotation_total
                else 0.0,
                "observed_share": round(minute.requests / share_total, 4) if share_total else None,
                "inflight": backend.inflight,
                "connections": backend.conns.opened,
                "requests": backend.requests,
                "errors": backend.errors,
                "rps": round(rate.requests_per_s, 3),
                "eps": round(rate.errors_per_s, 3),
                "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                "status": dict(zip(STATUS_CLASSES, split, strict=True)),
                "check": None if check is None else _check_doc(check),
                "series": stats.series(),
            }
        )
    rates = [rate for rate, _ in recent.values()]
    return {
        "version": server.runtime.get("lbrec", "unknown"),
        "runtime": server.runtime,
        "generation": config.generation,
        "digest": pool.digest,
        "revision": None if config.revision is None else config.revision.model_dump(),
        "now": round(now, 3),
        "started_at": round(server.started_at, 3),
        "uptime_s": round(now - server.started_at, 3),
        "reloads": server.reloads,
        "reload_errors": server.reload_errors,
        "last_reload_error": server.last_reload_error,
        "last_reload_at": round(server.last_reload_at, 3),
        "client_connections": len(server.connections),
        "ejections": server.ejections,
        "bucket_s": BUCKET_S,
        "buckets": BUCKETS,
        "rate_window_s": RATE_WINDOW_S,
        "latency_window_s": LATENCY_WINDOW_S,
        "totals": {
            "requests": sum(row["requests"] for row in rows),
            "errors": sum(row["errors"] for row in rows),
            "rps": round(sum(rate.requests_per_s for rate in rates), 3),
            "eps": round(sum(rate.errors_per_s for rate in rates), 3),
            "status": dict(zip(STATUS_CLASSES, status_sum, strict=True)),
            "backends": len(pool.backends),
            "up": sum(1 for b in pool.backends.values() if b.state == "up"),
            "in_rotation": len(eligible),
        },
        "backends": rows,
        "tls": certificates_snapshot(server),
        "routes": routes_view(server),
    }


async def _sample(server: ProxyServer) -> None:
    """Note each backend's state every second; close its bucket every :data:`BUCKET_S`."""
    loop = asyncio.get_running_loop()
    rotate_at = loop.time() + BUCKET_S
    while True:
        await asyncio.sleep(_STATE_POLL_S)
        now = time.time()
        rotate = loop.time() >= rotate_at
        if rotate:
            rotate_at = max(rotate_at + BUCKET_S, loop.time() + BUCKET_S / 2)
        for backend in server.shown():
            backend.stats.observe_state(backend.state, now)
            if rotate:
                backend.stats.rotate(requests=backend.requests, errors=backend.errors, now=now)


async def _sampler_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(
        _sample(app[SERVER_KEY]), name="admin-stats-sampler"
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _pool(request: web.Request) -> web.Response:
    return web.json_response(pool_snapshot(request.app[SERVER_KEY]))


async def _metrics(request: web.Request) -> web.Response:
    for refresh in request.app[_REFRESH_KEY]:
        await refresh()
    body = generate_latest(request.app[_REGISTRY_KEY])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(
        stats_snapshot(request.app[SERVER_KEY]), headers={"Cache-Control": "no-store"}
    )


async def _status_page(request: web.Request) -> web.Response:
    page = render_page(stats_snapshot(request.app[SERVER_KEY]))
    return web.Response(
        text=page,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": PAGE_POLICY},
    )


def make_admin_app(
    server: ProxyServer,
    *,
    extra_routes: Sequence[web.RouteDef] = (),
    token: str = "",
    figures_dir: Path | None = None,
    collectors: Sequence[Collector] = (),
    hosts: Collection[str] | None = None,
    refresh: Sequence[Callable[[], Awaitable[None]]] = (),
) -> web.Application:
    """The admin listener. ``extra_routes`` lets an embedding process (``lbrec up``) add its
    own endpoints, e.g. the GitOps webhook ``POST /-/sync``, without the proxy knowing them,
    and ``collectors`` its own metrics (the reconciler's). With a ``token``, every reading
    endpoint but ``/-/healthz`` requires it. ``figures_dir``: where the other workers of
    ``--workers N`` publish their counters (see :mod:`proxy.metrics`). ``hosts``: the names
    a reading request may give in ``Host`` beside loopback names and the listener's own
    address (default: ``LBREC_ADMIN_HOSTS``; a bad one raises :class:`ConfigError`).
    ``refresh``: awaited before each /metrics (each bounds its own time), for ``collectors``
    that hold figures fetched from another process (``--control-socket``)."""
    if hosts is None:
        names = parse_admin_hosts(os.environ.get(ADMIN_HOSTS_ENV, ""))
    else:
        names = parse_admin_hosts(",".join(hosts))
    middlewares = [host_middleware(names)]
    if token:
        middlewares.append(token_middleware(token))
    app = web.Application(middlewares=middlewares)
    app.on_response_prepare.append(security_headers)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(server, peers=lambda: peer_figures(figures_dir)))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    for collector in collectors:
        registry.register(collector)
    app[SERVER_KEY] = server
    app[_REGISTRY_KEY] = registry
    app[_REFRESH_KEY] = tuple(refresh)
    app.cleanup_ctx.append(_sampler_ctx)
    app.router.add_get("/-/healthz", _healthz)
    app.router.add_get("/-/pool", _pool)
    app.router.add_get("/-/stats", _stats)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _status_page)
    app.router.add_routes(extra_routes)
    return app
