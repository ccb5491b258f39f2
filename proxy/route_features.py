"""The routes' features in a running server (issue 23): what a reload adopts, and the
maintenance file followed while the server runs.

On every (re)load the server calls :func:`adopt`: a new :class:`~proxy.features.Features` is
compiled with the previous one (rate-limit buckets, verified credentials and forward-auth
sessions of unchanged routes carry over), swapped in with one assignment, and the previous one
retired (its forward-auth sessions that were not carried over are closed) in a task the server
owns. The request path reads ``server.features``, which is None while no route has a feature
and nothing is paused: then an exchange pays one attribute test (bench/hotpath.py).

:func:`follow_maintenance` polls ``maintenance.json`` beside backends.json (one ``stat`` per
0.25 s) and tells the worker's :class:`~proxy.maintenance.HoldGate`; a pause turns the request
path's features on for every route, a resume turns them off again when nothing else needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .config import BackendsConfig
from .features import Features
from .maintenance import MaintenanceFile
from .pool import instance_keys

if TYPE_CHECKING:
    from .server import ProxyServer

__all__ = ["adopt", "follow_maintenance", "refresh", "retire_all"]

_log = logging.getLogger("lbrec.proxy")
_POLL_S = 0.25


def adopt(server: ProxyServer, config: BackendsConfig) -> None:
    """Compile ``config``'s features beside the pool just swapped in; retire the previous."""
    previous = server.feature_set
    features = Features(
        config,
        server.config_dir,
        workers=server.workers,
        previous=previous,
        instance_keys=instance_keys(config.routable),
        gate=server.gate,
    )
    for problem in features.problems:
        _log.error(
            "route features: %s", problem, extra={"event": "features_problem", "error": problem}
        )
    server.feature_set = features
    refresh(server)
    if previous is not None:
        task = server.loop.create_task(features.retire(previous), name="features-retire")
        server.background.add(task)
        task.add_done_callback(server.background.discard)


def refresh(server: ProxyServer) -> None:
    """What the request path reads: the features when some are on (or something is paused),
    and whether answers are counted per route."""
    features = server.feature_set
    on = features is not None and (features.active or server.gate.state.active)
    server.features = features if on else None
    server.by_route = server.front is not None or server.features is not None


async def follow_maintenance(server: ProxyServer) -> None:
    """Follow maintenance.json beside backends.json until cancelled."""
    state_file = MaintenanceFile(server.config_dir / "backends.json")
    reported: str | None = None
    while True:
        if state_file.poll():
            server.gate.update(state_file.state)
            refresh(server)
            paused = state_file.state
            _log.info(
                "maintenance: %s",
                "all routes paused"
                if paused.all is not None
                else (", ".join(sorted(paused.routes)) + " paused" if paused.routes else "resumed"),
                extra={"event": "maintenance", "routes": sorted(paused.routes)},
            )
        if state_file.error != reported:
            reported = state_file.error
            if reported is not None:
                _log.error(
                    "maintenance file not read, the last state stays: %s",
                    reported,
                    extra={"event": "maintenance_error", "error": reported},
                )
        await asyncio.sleep(_POLL_S)


async def retire_all(server: ProxyServer) -> None:
    """At shutdown: the background retirements finished, every forward-auth session closed."""
    for task in list(server.background):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if server.feature_set is not None:
        await server.feature_set.retire(None)
