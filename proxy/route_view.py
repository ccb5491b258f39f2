"""The routes on the status page (issue 23): each route's features, whether it is paused, and
its figures (answers by class, refusals by reason, compression, affinity), as one section of
``/-/stats`` (:func:`routes_view`) and the page's script that draws it (:data:`ROUTES_JS`,
placed into proxy/dashboard.py's one inline script, so the page's hash policy covers it).

One row per route of the config (host + path), and ``*`` for the plain pool and the requests
no route took, when it has any figure: bounded by the config, never by what clients send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import RouteFeatures
from .route_stats import NO_ROUTE
from .stats import STATUS_CLASSES

if TYPE_CHECKING:
    from .server import ProxyServer

__all__ = ["ROUTES_JS", "feature_names", "routes_view"]


def feature_names(features: RouteFeatures | None) -> list[str]:
    """PURE. The features on, as the page names them."""
    if features is None:
        return []
    auth = features.auth
    names = [
        ("compress", features.compress not in (None, False)),
        (f"sticky {features.sticky}", features.sticky is not None),
        ("rate limit", features.rate_limit is not None),
        ("concurrency", features.rate_limit is not None and bool(features.rate_limit.concurrency)),
        ("max body", features.max_body is not None),
        ("allow-list", auth is not None and auth.allow is not None),
        ("basic auth", auth is not None and auth.basic is not None),
        ("forward-auth", auth is not None and auth.forward is not None),
        ("maintenance page", features.maintenance is not None),
        ("error pages", bool(features.error_pages)),
    ]
    return [name for name, on in names if on]


def routes_view(server: ProxyServer) -> list[dict[str, Any]]:
    """The rows of the routes section."""
    config = server.pool.config
    figures = server.route_figures.by_route
    state = server.gate.state
    keys = [route.key for route in config.routes or ()]
    features = {route.key: route.over(config.defaults) for route in config.routes or ()}
    if NO_ROUTE in figures or (config.defaults is not None and config.defaults.active):
        keys.append(NO_ROUTE)
        features[NO_ROUTE] = config.defaults or RouteFeatures()
    rows = []
    for key in keys:
        counters = figures.get(key)
        doc = counters.doc() if counters is not None else None
        rows.append(
            {
                "route": key,
                "features": feature_names(features.get(key)),
                "paused": state.pause_of(None if key == NO_ROUTE else key) is not None,
                "status": dict(zip(STATUS_CLASSES, doc["status"], strict=True)) if doc else {},
                "refused": {k: v for k, v in doc["refused"].items() if v} if doc else {},
                "compressed": doc["compressed"] if doc else 0,
                "bytes_in": doc["bytes_in"] if doc else 0,
                "bytes_out": doc["bytes_out"] if doc else 0,
                "affinity": doc["affinity"] if doc else {},
            }
        )
    return rows


ROUTES_JS = r"""
function routes(rows) {
  let section = document.getElementById("routes");
  if (!section) {
    section = document.createElement("section");
    section.id = "routes";
    section.className = "certs";
    document.getElementById("certs").after(section);
  }
  section.hidden = !rows.length;
  if (section.hidden) return;
  const pairs = o => Object.entries(o || {}).filter(e => e[1])
    .map(e => `${esc(e[0])} ${num(e[1])}`);
  section.innerHTML = `<h2>routes</h2><table><thead><tr><th>route</th><th>features</th>` +
    `<th>answers</th><th>refused</th><th>compressed</th><th>affinity</th></tr></thead><tbody>` +
    rows.map(r => {
      const saved = r.bytes_in ? Math.round(100 - 100 * r.bytes_out / r.bytes_in) : null;
      return `<tr data-route="${esc(r.route)}"><td><b>${esc(r.route)}</b>` +
        `${r.paused ? ` <span class="pill down" data-field="paused">paused</span>` : ""}</td>` +
        `<td>${esc(r.features.join(", ") || "\u2013")}</td>` +
        `<td>${pairs(r.status).join(" · ") || "\u2013"}</td>` +
        `<td data-field="refused">${pairs(r.refused).join(" · ") || "\u2013"}</td>` +
        `<td>${r.compressed ? num(r.compressed) + (saved === null ? "" : ` (${saved} % saved)`) :
          "\u2013"}</td><td>${pairs(r.affinity).join(" · ") || "\u2013"}</td></tr>`;
    }).join("") + `</tbody></table>`;
}
"""
