"""PURE. What `lbrec pause` and `lbrec resume` change in the maintenance state (the file's
format is proxy/maintenance.py's): which routes a name on the command line means, and the new
state. The adapter (reconciler/adapters/maintenance_file.py) reads and writes the file."""

from __future__ import annotations

from collections.abc import Sequence

from ...proxy.maintenance import MaintenanceState, Pause
from .errors import UsageError
from .spec import DesiredState

__all__ = ["paused", "resumed", "route_key", "select_routes"]


def route_key(host: str | None, path: str) -> str:
    """A route's name in logs, metrics, the status page and maintenance.json (RouteEntry.key)."""
    return f"{host or '*'}{path}"


def _known(desired: DesiredState) -> list[str]:
    return [route_key(r.host, r.path) for r in desired.routes]


def select_routes(desired: DesiredState, names: Sequence[str]) -> list[str]:
    """The route keys ``names`` mean: ``shop.example.com`` is every route of that host,
    ``shop.example.com/api/`` (or ``/api``) one route; ``*`` a route without a host. A name
    that matches no route is a UsageError listing the routes."""
    known = _known(desired)
    if not known:
        raise UsageError(
            f"{', '.join(names)}: this file has no routes: pause the whole pool with --all",
            hint="`lbrec pause --all [--message TEXT] [--hold SECONDS]`",
        )
    chosen: list[str] = []
    for name in names:
        text = name.strip().lower()
        if "/" in text:
            host, _, rest = text.partition("/")
            wanted = "/" + rest
            found = [
                key
                for route, key in zip(desired.routes, known, strict=True)
                if (route.host or "*") == host and route.path.rstrip("/") == wanted.rstrip("/")
            ]
        else:
            found = [
                key
                for route, key in zip(desired.routes, known, strict=True)
                if (route.host or "*") == text
            ]
        if not found:
            raise UsageError(
                f"{name!r}: no such route (routes: {', '.join(known)})",
                hint="name a host (all its routes) or host/path (one route), or use --all",
            )
        chosen += [key for key in found if key not in chosen]
    return chosen


def paused(state: MaintenanceState, routes: Sequence[str] | None, pause: Pause) -> MaintenanceState:
    """The state with ``routes`` (None: all) paused by ``pause``."""
    if routes is None:
        return state.model_copy(update={"all": pause})
    merged = dict(state.routes)
    merged.update({key: pause for key in routes})
    return state.model_copy(update={"routes": dict(sorted(merged.items()))})


def resumed(state: MaintenanceState, routes: Sequence[str] | None) -> MaintenanceState:
    """The state with ``routes`` resumed; None: everything (``--all``: every pause goes)."""
    if routes is None:
        return MaintenanceState()
    return state.model_copy(
        update={"routes": {k: v for k, v in state.routes.items() if k not in routes}}
    )
