"""The admin listener (aiohttp): ``/-/healthz``, ``/-/pool``, ``/metrics`` and a status page.

Counters live as plain ints on the backends (no cost on the request path); a custom
prometheus-client collector reads them at scrape time.
"""

from __future__ import annotations

import hmac
import html
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.server import ProxyServer

__all__ = ["SERVER_KEY", "make_admin_app", "pool_snapshot"]

SERVER_KEY = web.AppKey("proxy_server", ProxyServer)
_REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)

_STATES = ("up", "down", "checking", "ejected", "draining")


def pool_snapshot(server: ProxyServer) -> dict[str, Any]:
    """The JSON document of ``/-/pool``."""
    pool = server.pool
    config = pool.config
    eligible = set(pool.balancer.eligible)
    backends = []
    current = list(pool.backends.values())
    for backend in current + [b for b in server.draining if b not in current]:
        check = backend.last_check
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
                "last_check": None
                if check is None
                else {"ok": check.ok, "at": check.at, "detail": check.detail},
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
        "backends": backends,
    }


class _PoolCollector(Collector):
    def __init__(self, server: ProxyServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        backends = list(server.pool.backends.values())
        requests = CounterMetricFamily(
            "lbrec_proxy_backend_requests", "Requests sent to a backend", labels=["backend"]
        )
        errors = CounterMetricFamily(
            "lbrec_proxy_backend_errors",
            "Failed attempts (connect errors, timeouts, broken or 5xx answers)",
            labels=["backend"],
        )
        inflight = GaugeMetricFamily(
            "lbrec_proxy_backend_inflight", "Requests in flight", labels=["backend"]
        )
        weight = GaugeMetricFamily("lbrec_proxy_backend_weight", "Weight", labels=["backend"])
        conns = GaugeMetricFamily(
            "lbrec_proxy_backend_connections", "Open backend connections", labels=["backend"]
        )
        state = GaugeMetricFamily(
            "lbrec_proxy_backend_state", "1 for the backend's state", labels=["backend", "state"]
        )
        for b in backends:
            requests.add_metric([b.name], b.requests)
            errors.add_metric([b.name], b.errors)
            inflight.add_metric([b.name], b.inflight)
            weight.add_metric([b.name], b.weight)
            conns.add_metric([b.name], b.conns.opened)
            for name in _STATES:
                state.add_metric([b.name, name], 1.0 if b.state == name else 0.0)
        yield from (requests, errors, inflight, weight, conns, state)
        yield CounterMetricFamily("lbrec_proxy_reloads", "Pools swapped in", value=server.reloads)
        yield CounterMetricFamily(
            "lbrec_proxy_reload_errors", "Rejected config files", value=server.reload_errors
        )
        yield CounterMetricFamily(
            "lbrec_proxy_ejections", "Passive ejections", value=server.ejections
        )
        yield GaugeMetricFamily(
            "lbrec_proxy_client_connections",
            "Open client connections",
            value=len(server.connections),
        )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _pool(request: web.Request) -> web.Response:
    return web.json_response(pool_snapshot(request.app[SERVER_KEY]))


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_REGISTRY_KEY])
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>lbrec proxy</title>
<meta http-equiv="refresh" content="5">
<style>
body{{font:13px sans-serif;margin:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:2px 8px;text-align:right}} th{{background:#ccd}}
td.n{{text-align:left}} tr.up{{background:#cfc}} tr.down,tr.ejected{{background:#fcc}}
tr.checking{{background:#ffc}} tr.draining{{background:#ddd}}
</style></head><body>
<h3>lbrec proxy &mdash; generation {generation}</h3>
<p>revision: {revision} &middot; reloads: {reloads} &middot; rejected files: {reload_errors}
&middot; client connections: {clients} &middot; uptime: {uptime}s</p>
{error}
<table><tr><th>backend</th><th>url</th><th>weight</th><th>state</th><th>in-flight</th>
<th>requests</th><th>errors</th><th>conns</th><th>last check</th></tr>
{rows}
</table></body></html>
"""


async def _status_page(request: web.Request) -> web.Response:
    snap = pool_snapshot(request.app[SERVER_KEY])
    rows = []
    for b in snap["backends"]:
        check = b["last_check"]
        check_text = (
            "-" if check is None else f"{'ok' if check['ok'] else 'FAIL'} {check['detail']}"
        )
        cells = [
            f'<td class="n">{html.escape(b["name"])}</td>',
            f'<td class="n">{html.escape(b["url"])}</td>',
            f"<td>{b['weight']}</td>",
            f'<td class="n">{b["state"]}</td>',
            f"<td>{b['inflight']}</td>",
            f"<td>{b['requests']}</td>",
            f"<td>{b['errors']}</td>",
            f"<td>{b['connections']}</td>",
            f'<td class="n">{html.escape(check_text)}</td>',
        ]
        rows.append(f'<tr class="{b["state"]}">{"".join(cells)}</tr>')
    revision = snap["revision"] or {}
    error = snap["last_reload_error"]
    page = _PAGE.format(
        generation=html.escape(snap["generation"] or "-"),
        revision=html.escape(str(revision.get("commit") or "-")),
        reloads=snap["reloads"],
        reload_errors=snap["reload_errors"],
        clients=snap["client_connections"],
        uptime=int(snap["uptime_s"]),
        error=f"<p><b>last reload rejected:</b> {html.escape(error)}</p>" if error else "",
        rows="\n".join(rows),
    )
    return web.Response(text=page, content_type="text/html")


def _token_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Reading endpoints need the admin token; /-/healthz stays open (container health
        # checks); mutating endpoints (POST /-/sync) check their own token.
        if request.method in ("GET", "HEAD") and request.path != "/-/healthz":
            presented = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(presented, expected):
                return web.json_response(
                    {"error": "admin token required (Authorization: Bearer ...)"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="lbrec"'},
                )
        return await handler(request)

    return check


def make_admin_app(
    server: ProxyServer, *, extra_routes: Sequence[web.RouteDef] = (), token: str = ""
) -> web.Application:
    """The admin listener. ``extra_routes`` lets an embedding process (``lbrec up``) add its
    own endpoints, e.g. the GitOps webhook ``POST /-/sync``, without the proxy knowing them.
    With a ``token``, every reading endpoint but ``/-/healthz`` requires it."""
    app = web.Application(middlewares=[_token_middleware(token)] if token else [])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PoolCollector(server))
    app[SERVER_KEY] = server
    app[_REGISTRY_KEY] = registry
    app.router.add_get("/-/healthz", _healthz)
    app.router.add_get("/-/pool", _pool)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/", _status_page)
    app.router.add_routes(extra_routes)
    return app
