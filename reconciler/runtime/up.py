"""EDGE. ``lbrec up``: apply, serve the proxy, and follow the file (or a git branch).

One foreground command for a newcomer and for development. With proxy.mode: host, the data
plane is ``lbrec proxy`` in processes of its own (:mod:`.dataplane`): ``up`` binds the listen
and admin sockets from the desired state first (nothing else is touched if they cannot be),
starts the proxies on them at once, serving this folder's own last good pool (stamped with its
project and file) or, with none yet, answering 503 with the reason, and then runs the control
loop (watch, or sync with ``--repo``) in a daemon thread, since its passes block on Docker for
as long as a build takes. The main thread's asyncio loop serves ``up``'s control socket (the
webhook and the reconciler's metrics, which the proxy's admin listener forwards and appends, see
:mod:`proxy.control`) and waits for a signal. Logs of all go to stderr. Ctrl-C/SIGTERM stop the
loop and drain the proxies; ``--down`` also removes this project's containers (by id, found by
label). With proxy.mode: container the first pass (or sync) runs, then the loop, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ...proxy.control import PEER_HEADER
from ...proxy.logs import configure_logging

if TYPE_CHECKING:  # aiohttp and the proxy load only when `lbrec up` runs (a fast CLI)
    from aiohttp import web
from ..adapters.workspace import Workspace
from ..core.errors import LbrecError
from ..core.output import BuildProgress, Style, format_plan, format_recap
from ..core.spec import DesiredState, parse_spec
from ..core.webhooks import ADMIN_TOKEN_ENV, SYNC_TOKEN_ENV, require_admin_token
from .dataplane import ProxySupervisor, auto_workers, socket_path
from .options import RuntimeOptions
from .passes import DockerFactory, run_pass
from .signals import Runnable, run_until_signal
from .sync import SyncLoop, build_sync_loop
from .watch import build_watch_loop
from .webhook import sync_webhook

__all__ = ["SYNC_TOKEN_ENV", "run_up", "sync_webhook"]

_log = logging.getLogger("lbrec.up")


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


def _remove_all(workspace: Workspace, docker: DockerFactory, desired: DesiredState) -> None:
    """``--down``: the project as it was when up started (the file may be invalid by now)."""
    port = docker(workspace, desired)
    ids = [c.id for c in port.observe()]
    port.remove(ids)
    port.remove_network()
    _log.info("--down: removed %d containers of project %s", len(ids), desired.project)


def _follow_the_file(
    workspace: Workspace, docker: DockerFactory, options: RuntimeOptions
) -> tuple[DesiredState, Runnable]:
    """The desired state and the watch loop. In container mode, one pass first (the lb
    container serves what it applies); in host mode the proxies serve first."""
    desired = workspace.load()
    if desired.proxy.mode != "host" and _first_pass(workspace, docker, options):
        _log.warning("first apply left backends out of the pool; the loop retries")
    return desired, build_watch_loop(options, docker)


def _follow_the_branch(
    workspace: Workspace, docker: DockerFactory, options: RuntimeOptions
) -> tuple[DesiredState, SyncLoop, list[web.RouteDef]]:
    """`up --repo`: the webhook routes (a malformed whsec_ secret stops here, with nothing
    applied) and the sync loop. With the webhook on, the admin token is required
    (:func:`require_admin_token`), before anything is fetched. The listeners come from the
    deploy folder's desired state (the last commit deployed here); a new folder reads them from
    the branch head (git only). In container mode the first sync runs first, as before."""
    token = os.environ.get(SYNC_TOKEN_ENV, "")
    require_admin_token(token, os.environ.get(ADMIN_TOKEN_ENV, ""))
    sync = build_sync_loop(options, docker)
    routes = sync_webhook(sync.trigger, token, branch=options.branch, peer_header=PEER_HEADER)
    try:
        desired = workspace.load()
    except LbrecError:
        desired = _branch_head(sync)
    if desired.proxy.mode != "host":
        result = sync.sync_once()
        _log.info(
            "first sync: commit %s %s%s",
            result.commit[:12],
            result.state,
            f": {result.error}" if result.error else "",
        )
        desired = workspace.load()
    return desired, sync, routes


def _branch_head(sync: SyncLoop) -> DesiredState:
    """The desired state of the branch head (a new deploy folder: where to listen)."""
    head = sync.mirror.fetch(sync.source.branch)
    path = sync.source.path
    text = sync.mirror.show(head, path)
    if text is None:
        raise LbrecError(f"{path}: not in commit {head[:12]}", hint="check --path")
    return parse_spec(text, source=f"{path}@{head[:12]}")


def _workers(desired: DesiredState) -> int:
    wanted = desired.proxy.workers
    return auto_workers(os.cpu_count()) if wanted == "auto" else wanted


async def _control_app(path: Path, routes: list[web.RouteDef]) -> web.AppRunner:
    """``up``'s end of the proxy's ``--control-socket``: the webhook and the loop's metrics."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from .metrics import LOOP_METRICS

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(LOOP_METRICS.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_routes(routes)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # the up before this one's: it is being replaced
    site = web.UnixSite(runner, str(path))
    await site.start()
    os.chmod(path, 0o600)
    return runner


_PASS_NICENESS = 10


def _yield_to_the_proxies(thread: threading.Thread) -> None:
    """The loop's thread (its passes, and the docker and git commands they start, which inherit
    it) runs at nice 10 (Linux: a thread's own priority), so that on a busy machine the proxy
    processes come first: a pass must not move the proxy's latency (bench/pass_p99.py)."""
    if thread.native_id is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, thread.native_id, _PASS_NICENESS)


async def _serve_host(
    supervisor: ProxySupervisor,
    desired: DesiredState,
    control: Runnable,
    routes: list[web.RouteDef],
    spec_file: Path,
) -> int:
    """Host mode after the sockets are held: control socket, proxies, loop; until a signal
    (0; 130 for a second one) or until a new ``lbrec up`` of this folder takes over (0)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[float] = []  # when each stopping signal came

    def on_signal(signum: int) -> None:
        now = loop.time()
        if signals and now - signals[-1] < 1.0:
            return  # one kill of the process group, seen twice (timeout(1) does that)
        signals.append(now)
        if len(signals) == 1:
            _log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    assert supervisor.control_socket is not None
    runner = await _control_app(supervisor.control_socket, routes)
    thread: threading.Thread | None = None
    try:
        await asyncio.to_thread(supervisor.start)
        tls = desired.tls.listen if desired.tls is not None else None
        if supervisor.adopted and (supervisor.listen, supervisor.admin, supervisor.tls) != (
            desired.listen,
            desired.admin,
            tls,
        ):
            await asyncio.to_thread(
                supervisor.move, desired.listen, desired.admin, desired.project, tls
            )
        _log.info(
            "serving %s (admin %s) from %d proxy process%s (pid %s); watching %s. Ctrl-C stops.",
            desired.listen,
            desired.admin,
            supervisor.workers,
            "" if supervisor.workers == 1 else "es",
            ", ".join(str(p) for p in supervisor.pids),
            spec_file,
            extra={"event": "up_serving", "proxies": supervisor.pids},
        )
        thread = control.start()
        _yield_to_the_proxies(thread)
        while not stop.is_set() and not supervisor.superseded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        control.stop()
        await asyncio.to_thread(supervisor.stop)
        if thread is not None and len(signals) < 2:
            stopped = asyncio.create_task(asyncio.to_thread(control.join, 120))
            while not stopped.done() and len(signals) < 2:
                await asyncio.wait({stopped}, timeout=0.2)
        if not supervisor.superseded.is_set():
            await runner.cleanup()  # a new up has its own socket at that path
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if len(signals) >= 2:
        _log.warning("interrupted during a pass")
        return 130
    if supervisor.superseded.is_set():
        _log.info("stopped: a new `lbrec up` serves this folder")
    return 0


def _run_container_mode(control: Runnable, desired: DesiredState, workspace: Workspace) -> int:
    _log.info(
        "the proxy runs in the lb container on %s; watching %s. Ctrl-C stops.",
        desired.listen,
        workspace.spec_file,
    )
    try:
        return run_until_signal(control, _log)
    finally:
        control.stop()


def run_up(options: RuntimeOptions, docker: DockerFactory) -> int:
    """`lbrec up`: serve first (this folder's last good pool), reconcile beside it."""
    configure_logging(options.log_format, access_log=options.access_log)
    workspace = Workspace.at(options.file)
    routes: list[web.RouteDef] = []
    from .metrics import serve_metrics

    if not serve_metrics(options.metrics, _log):  # before anything is touched
        return 2
    control: Runnable
    try:
        if options.repo is None:
            desired, control = _follow_the_file(workspace, docker, options)
        else:
            desired, control, routes = _follow_the_branch(workspace, docker, options)
        if desired.proxy.mode == "host":
            supervisor = ProxySupervisor(
                workspace,
                workers=_workers(desired),
                project=desired.project,
                listen=desired.listen,
                admin=desired.admin,
                tls=desired.tls.listen if desired.tls is not None else None,
                control_socket=socket_path(workspace.folder, "control.sock"),
                log_format=options.log_format,
                access_log=options.access_log,
            )
            supervisor.acquire()  # before anything is changed: PortInUse stops here
    except LbrecError as err:
        _log.error("%s%s", err.message, f" (hint: {err.hint})" if err.hint else "")
        return err.exit_code

    if desired.proxy.mode == "host":
        code = asyncio.run(_serve_host(supervisor, desired, control, routes, workspace.spec_file))
        if code or supervisor.superseded.is_set():
            return code
    elif _run_container_mode(control, desired, workspace) == 130:
        return 130
    if options.down:
        try:
            _remove_all(workspace, docker, desired)
        except LbrecError as err:
            _log.error("--down: %s", err.message)
            return err.exit_code
    _log.info("stopped")
    return 0
