"""EDGE. ``lbrec up``: apply, serve the proxy, and follow the file (or a git branch).

One foreground command for a newcomer and for development. The first pass runs before the proxy
starts so that it has a pool to serve. Then the control loop (watch, or sync with ``--repo``)
runs in a daemon thread, since its passes block on Docker for as long as a build takes, while
the proxy (proxy.mode: host) runs on the main thread's asyncio loop. Logs of all three go to
stderr through the `lbrec` logger. Ctrl-C/SIGTERM stop the loop, then drain the proxy;
``--down`` also removes this project's containers (by id, found by label).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ...proxy.config import ConfigError, load_config
from ...proxy.logs import configure_logging
from ..adapters.probes import port_free

if TYPE_CHECKING:  # aiohttp and the proxy load only when `lbrec up` runs (a fast CLI)
    from aiohttp import web
from ..adapters.workspace import Workspace
from ..core.errors import LbrecError, PortInUse
from ..core.output import BuildProgress, Style, format_plan, format_recap
from ..core.spec import DesiredState
from ..core.webhooks import (
    ADMIN_TOKEN_ENV,
    SYNC_TOKEN_ENV,
    Delivery,
    DeliveryMemory,
    Outcome,
    Verdict,
    WebhookSecret,
    judge,
    require_admin_token,
)
from .options import RuntimeOptions
from .passes import DockerFactory, run_pass
from .signals import Runnable, run_until_signal
from .sync import build_sync_loop
from .watch import build_watch_loop

__all__ = ["SYNC_TOKEN_ENV", "run_up", "sync_webhook"]

_log = logging.getLogger("lbrec.up")
_webhook_log = logging.getLogger("lbrec.webhook")


def _first_pass(workspace: Workspace, docker: DockerFactory, options: RuntimeOptions) -> int:
    style = Style(color=False)
    report = run_pass(
        workspace,
        docker,
        command="lbrec up",
        lock_timeout=options.lock_timeout,
        health_timeout=options.health_timeout,
        on_wait=_log.info,
        progress=BuildProgress(_log.info, style).line,
        on_plan=lambda p: _log.info("plan:\n%s", format_plan(p, style)),
    )
    _log.info("%s", format_recap(report, style))
    return 1 if report.failed else 0


def _check_listeners_free(desired: DesiredState) -> None:
    """Before anything changes: the proxy's addresses must be free (a second `lbrec up` in the
    same folder, or another program, would otherwise make this one fail after applying)."""
    for role, hostport in (("listen", desired.listen), ("admin", desired.admin)):
        try:
            from ...proxy.app import parse_hostport

            free = port_free(*parse_hostport(hostport))
        except OSError as err:  # not an address of this machine, for one
            raise PortInUse(
                f"{role}: {hostport} cannot be bound ({err.strerror}): nothing was changed"
            ) from err
        if not free:
            raise PortInUse(
                f"{role}: {hostport} is already in use: nothing was changed",
                hint="is another `lbrec up` or `lbrec proxy` running for this folder?",
            )


def _last_good_pool(pool_file: Path) -> bool:
    """Whether config/backends.json holds a pool the proxy can serve at once."""
    try:
        load_config(pool_file)
    except ConfigError:
        return False
    return True


def _remove_all(workspace: Workspace, docker: DockerFactory, desired: DesiredState) -> None:
    """``--down``: the project as it was when up started (the file may be invalid by now)."""
    port = docker(workspace, desired)
    ids = [c.id for c in port.observe()]
    port.remove(ids)
    port.remove_network()
    _log.info("--down: removed %d containers of project %s", len(ids), desired.project)


def sync_webhook(
    trigger: Callable[[], None],
    token: str,
    *,
    branch: str,
    clock: Callable[[], float] = time.time,
) -> list[web.RouteDef]:
    """``POST /-/sync`` on the admin listener: a forge webhook deploys at once.

    Each call is judged by :func:`reconciler.core.webhooks.judge` (GitHub, Gitea/Forgejo, GitLab,
    Standard Webhooks and ``Authorization: Bearer``, all keyed on ``token``; pushes to another
    branch than ``branch`` are ignored; replays refused) and logged with its verdict and source
    address. Without a token configured the endpoint refuses every call (403), so it can never
    be left open; a ``whsec_`` token that is not base64 raises :class:`UsageError` here.
    """
    secret = WebhookSecret.parse(token)
    memory = DeliveryMemory()

    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        source = request.remote or "unknown"
        try:
            body = await request.read() if secret.token else b""
        except web.HTTPRequestEntityTooLarge as err:
            _log_webhook(Verdict(Outcome.REFUSED, 413, f"body: {err.text}"), request, source)
            raise
        delivery = Delivery(request.method, request.headers, body, now=clock(), source=source)
        verdict = judge(delivery, secret=secret, branch=branch, memory=memory)
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


async def _serve_until_signal(
    pool_file: Path,
    *,
    access_log: bool,
    on_ready: Callable[[], None],
    admin_routes: list[web.RouteDef],
) -> None:
    from .metrics import LOOP_METRICS

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        from ...proxy.app import serve as serve_proxy

        await serve_proxy(
            pool_file,
            stop=stop,
            access_log=access_log,
            handle_signals=False,
            ready=lambda _info: on_ready(),
            admin_routes=admin_routes,
            admin_collectors=[LOOP_METRICS.registry],
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _follow_the_file(
    workspace: Workspace, docker: DockerFactory, options: RuntimeOptions
) -> tuple[DesiredState, Runnable]:
    """Before serving: the listeners must be free; then either serve the last known good pool
    from the first second (the loop's first pass reconciles beside it, engine reachable or
    not), or, with no pool yet, apply once first."""
    desired = workspace.load()
    serve_first = False
    if desired.proxy.mode == "host":
        _check_listeners_free(desired)
        serve_first = _last_good_pool(workspace.pool_file)
    if serve_first:
        _log.info("serving the last known good pool while the first pass runs")
    elif _first_pass(workspace, docker, options):
        _log.warning("first apply left backends out of the pool; the loop retries")
    return desired, build_watch_loop(options, docker)


def _follow_the_branch(
    workspace: Workspace, docker: DockerFactory, options: RuntimeOptions
) -> tuple[DesiredState, Runnable, list[web.RouteDef]]:
    """`up --repo`: the webhook routes (a malformed whsec_ secret stops here, with nothing
    applied), the first sync, then the listeners must be free. With the webhook on, the admin
    token is required (:func:`require_admin_token`), before anything is fetched."""
    token = os.environ.get(SYNC_TOKEN_ENV, "")
    require_admin_token(token, os.environ.get(ADMIN_TOKEN_ENV, ""))
    sync = build_sync_loop(options, docker)
    routes = sync_webhook(sync.trigger, token, branch=options.branch)
    result = sync.sync_once()
    _log.info(
        "first sync: commit %s %s%s",
        result.commit[:12],
        result.state,
        f": {result.error}" if result.error else "",
    )
    desired = workspace.load()
    if desired.proxy.mode == "host":
        _check_listeners_free(desired)
    return desired, sync, routes


def run_up(options: RuntimeOptions, docker: DockerFactory) -> int:
    """`lbrec up`: serve first (the last good pool), reconcile beside it, until a signal."""
    configure_logging(options.log_format, access_log=options.access_log)
    workspace = Workspace.at(options.file)
    routes: list[web.RouteDef] = []
    from .metrics import serve_metrics

    if not serve_metrics(options.metrics, _log):  # before anything is touched
        return 2
    try:
        if options.repo is None:
            desired, control = _follow_the_file(workspace, docker, options)
        else:
            desired, control, routes = _follow_the_branch(workspace, docker, options)
    except LbrecError as err:
        _log.error("%s%s", err.message, f" (hint: {err.hint})" if err.hint else "")
        return err.exit_code

    thread: threading.Thread | None = None

    def start_loop() -> None:
        nonlocal thread
        thread = control.start()

    try:
        if desired.proxy.mode == "host":
            _log.info(
                "serving %s (admin %s); watching %s. Ctrl-C stops.",
                desired.listen,
                desired.admin,
                workspace.spec_file,
            )
            asyncio.run(
                _serve_until_signal(
                    workspace.pool_file,
                    access_log=options.access_log,
                    on_ready=start_loop,
                    admin_routes=routes,
                )
            )
        else:
            _log.info(
                "the proxy runs in the lb container on %s; watching %s. Ctrl-C stops.",
                desired.listen,
                workspace.spec_file,
            )
            if run_until_signal(control, _log) == 130:
                return 130
    finally:
        control.stop()
        if thread is not None:
            control.join(timeout=120)
    if options.down:
        try:
            _remove_all(workspace, docker, desired)
        except LbrecError as err:
            _log.error("--down: %s", err.message)
            return err.exit_code
    _log.info("stopped")
    return 0
