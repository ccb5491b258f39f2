"""EDGE. ``lbrec watch``: reconcile when desired-state.yaml changes, and every ``--resync``.

A watchdog Observer watches the file's *folder* (not the file: editors that save by writing a
temp file and renaming it over the original replace the inode) and keeps only events whose
source or destination base name is the file's. Events only notify the :class:`ControlLoop`;
the pass itself is level-triggered and reads the file afresh, so a burst of events gives one
pass, and an event during a pass gives exactly one more.

For ``lbrec up`` the same loop runs in a daemon *thread*, not an asyncio task, because a pass
blocks (docker CLI subprocesses, image builds, health waits) for up to minutes and must never
stall the proxy's event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ...proxy.logs import configure_logging
from ..adapters.docker_events import DockerEvents
from ..adapters.engine_epoch import freeze_pool
from ..adapters.workspace import Workspace
from ..core.errors import LbrecError
from ..core.plan import Plan
from ..core.render import POOL_FILE
from ..core.report import Report
from ..core.schedule import Backoff
from .certs import attach_certificates
from .loop import ControlLoop, Reconcile
from .metrics import serve_metrics
from .options import QUIET_PERIOD, RuntimeOptions
from .passes import DockerFactory, run_pass
from .signals import run_until_signal

__all__ = ["QUIET_PERIOD", "FileWatch", "build_watch_loop", "log_plan", "run_watch", "watch_loop"]


# Events that can mean new content; opened/closed-without-write come from our own reads.
_CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed", "attrib"})


class _Handler(FileSystemEventHandler):
    def __init__(self, name: str, on_change: Callable[[str], None]) -> None:
        self._name = name
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _CHANGES:
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if any(os.path.basename(os.fsdecode(p)) == self._name for p in paths if p):
            self._on_change(event.event_type)


class FileWatch:
    """A watchdog Observer on ``path``'s folder that reports changes to ``path`` only."""

    def __init__(self, path: Path, on_change: Callable[[str], None]) -> None:
        self.path = Path(path).absolute()
        self._on_change = on_change
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        if self._observer is not None:
            raise RuntimeError(f"already watching {self.path}")
        observer = Observer()
        observer.schedule(
            _Handler(self.path.name, self._on_change), str(self.path.parent), recursive=False
        )
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


def watch_loop(
    path: Path,
    reconcile: Reconcile,
    *,
    resync: float | None = 30.0,
    debounce: float = QUIET_PERIOD,
    max_delay: float = 2.0,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
    name: str = "watch",
    docker_project: str | None = None,
) -> ControlLoop:
    """The control loop with the file (and, given a project, its `docker events`) attached.

    ``reconcile`` is one level-triggered pass (runtime/passes.py); tests inject a fake."""
    path = Path(path).absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder")
    loop = ControlLoop(
        reconcile,
        name=name,
        resync=resync,
        debounce=debounce,
        max_delay=max_delay,
        backoff=backoff or Backoff(),
        permanent_hint=f"waiting for {path.name} to change",
        clock=clock,
        folder=path.parent,
        banner=f"watching {path} ("
        + ("resync off" if resync is None else f"resync every {resync:g}s")
        + ")",
    )
    log = loop.logger

    def changed(kind: str) -> None:
        log.info("%s: %s", path.name, kind, extra={"event": kind})
        loop.notify(f"{path.name} {kind}")

    def docker_event(what: str) -> None:
        log.info("docker: %s", what, extra={"event": "docker"})
        # The engine came back after an outage: everything is re-observed at once (its
        # events meanwhile are lost), no debounce and never behind a back-off (the pool is
        # frozen until then); other drift waits the debounce as a save, and the back-off.
        back = what.startswith("reconnected")
        loop.notify(f"docker {what}", drift=not back, immediate=back)

    def engine_lost() -> None:
        # At once, from the events thread (a pass may be running): the proxy stops routing
        # to ports the engine may hand to others when it is back (adapters/engine_epoch.py).
        freeze_pool(path.parent, path.parent / POOL_FILE, "the docker events stream broke")

    loop.attach(FileWatch(path, changed))
    if docker_project:
        loop.attach(DockerEvents(docker_project, docker_event, on_lost=engine_lost))
    return loop


def log_plan(loop: ControlLoop) -> Callable[[Plan], None]:
    """An ``on_plan`` callback: one log line per change, tagged with the pass number."""

    def show(the_plan: Plan) -> None:
        for action in the_plan.changes:
            loop.logger.info(
                "pass=%d %s %s: %s",
                loop.passes,
                action.kind.value,
                action.backend,
                action.reason or "-",
                extra={
                    "event": "plan_change",
                    "pass": loop.passes,
                    "action": action.kind.value,
                    "backend": action.backend,
                },
            )

    return show


def build_watch_loop(options: RuntimeOptions, docker: DockerFactory) -> ControlLoop:
    """The real watch loop for ``options.file`` (logging each planned change); for `watch`
    and `up`. With ``docker_events`` it also reacts at once when one of the project's
    containers stops or is removed (the project name is read from the file now; a rename
    needs a restart)."""
    workspace = Workspace.at(options.file)
    project = None
    if options.docker_events:
        try:
            project = workspace.load().project
        except LbrecError:
            project = None  # an invalid file: the loop reports it; resync still repairs drift

    def reconcile() -> Report:
        return run_pass(
            workspace,
            docker,
            command="lbrec watch",
            lock_timeout=options.lock_timeout,
            health_timeout=options.health_timeout,
            on_plan=log_plan(loop),
        )

    loop = watch_loop(
        workspace.spec_file,
        reconcile,
        resync=options.resync or None,
        debounce=options.debounce,
        docker_project=project,
    )
    attach_certificates(loop, workspace)  # ACME orders and renewals, in a thread of their own
    return loop


def run_watch(options: RuntimeOptions, docker: DockerFactory) -> int:
    """`lbrec watch`: runs until SIGINT/SIGTERM; 0 on a clean stop, 130 on a forced one."""
    log = configure_logging(options.log_format, name="watch")
    workspace = Workspace.at(options.file)
    if not workspace.folder.is_dir():
        log.error("%s: no such folder", workspace.folder)
        return 2
    loop = build_watch_loop(options, docker)
    if not serve_metrics(options.metrics, log):
        return 2
    return run_until_signal(loop, log)
