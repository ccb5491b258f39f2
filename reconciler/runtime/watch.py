"""EDGE. ``lbrec watch``: reconcile when desired-state.yaml changes, and every ``--resync``.

A watchdog Observer watches the file's *folder* (not the file: editors that save by writing a
temp file and renaming it over the original replace the inode) and keeps only events whose
source or destination base name is the file's. Events only notify the :class:`ControlLoop`;
the pass itself is level-triggered and reads the file afresh, so a burst of events gives one
pass, and an event during a pass gives exactly one more.

For ``lbrec up``: :meth:`WatchLoop.start` runs the loop in a daemon *thread*, not an asyncio
task, because a pass blocks (docker CLI subprocesses, image builds, health waits) for up to
minutes and must never stall the proxy's event loop. Stop it with ``stop()`` then ``join()``.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ..adapters.docker import DockerEvents
from ..adapters.lock import project_lock
from ..adapters.workspace import Workspace
from ..core.durations import duration_arg
from ..core.errors import LbrecError
from ..core.plan import Plan
from ..core.report import Report
from ..engine.converge import converge
from .loop import (
    Backoff,
    ControlLoop,
    DockerFactory,
    Reconcile,
    configure_logging,
    whales_docker,
)

__all__ = [
    "QUIET_PERIOD",
    "FileWatch",
    "WatchLoop",
    "add_watch_arguments",
    "build_watch_loop",
    "log_plan",
    "make_reconcile",
    "run_thread_until_stopped",
    "run_watch",
    "stop_on_signals",
]

# A saved file is applied only once it has stayed unchanged this long: an editor's or a
# script's save in two writes is never applied half-way (measured: two parts 1.5 s apart used
# to destroy both containers; an empty or key-less file is refused anyway, see spec.py).
QUIET_PERIOD = 0.5

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


class WatchLoop:
    """Reconcile on changes to ``path``, every ``resync`` seconds, and back off on failure.

    ``reconcile`` is one level-triggered pass (see :func:`make_reconcile`); tests inject a fake.
    ``run()`` blocks until :meth:`stop`; :meth:`start` runs it in a daemon thread.
    """

    def __init__(
        self,
        path: Path,
        reconcile: Reconcile,
        *,
        resync: float | None = 30.0,
        debounce: float = QUIET_PERIOD,
        max_delay: float = 2.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger_name: str = "watch",
        docker_project: str | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self.loop = ControlLoop(
            reconcile,
            name=logger_name,
            resync=resync,
            debounce=debounce,
            max_delay=max_delay,
            backoff=backoff or Backoff(),
            permanent_hint=f"waiting for {self.path.name} to change",
            clock=clock,
        )
        self._log = self.loop.logger
        self._files = FileWatch(self.path, self._changed)
        self._events = DockerEvents(docker_project, self._docker_event) if docker_project else None
        self._thread: threading.Thread | None = None

    @property
    def passes(self) -> int:
        return self.loop.passes

    def _changed(self, kind: str) -> None:
        self._log.info("%s: %s", self.path.name, kind, extra={"event": kind})
        self.loop.notify(f"{self.path.name} {kind}")

    def _docker_event(self, what: str) -> None:
        self._log.info("docker: %s", what, extra={"event": "docker"})
        # The engine came back after an outage: everything is re-observed at once (its
        # events meanwhile are lost), no debounce; other drift waits the debounce as a save.
        self.loop.notify(f"docker {what}", drift=True, immediate=what.startswith("reconnected"))

    def run(self) -> None:
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path.parent}: no such folder")
        self._files.start()
        if self._events is not None:
            self._events.start()
        self._log.info(
            "watching %s (%s)",
            self.path,
            "resync off" if self.loop.resync is None else f"resync every {self.loop.resync:g}s",
        )
        try:
            self.loop.run()
        finally:
            self._files.stop()
            if self._events is not None:
                self._events.stop()
            self._log.info("stopped after %d passes", self.loop.passes)

    def start(self) -> threading.Thread:
        if self._thread is not None:
            raise RuntimeError("watch loop already started")
        self._thread = threading.Thread(target=self.run, name="lbrec-watch", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask the loop to end; a pass in progress finishes first."""
        self.loop.stop()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def make_reconcile(
    workspace: Workspace,
    *,
    docker: DockerFactory = whales_docker,
    command: str = "lbrec watch",
    lock_timeout: float = 300.0,
    health_timeout: float = 60.0,
    on_plan: Callable[[Plan], None] | None = None,
) -> Reconcile:
    """One real pass, as `lbrec apply` does it: take the project lock, load, converge."""

    def reconcile() -> Report:
        with project_lock(workspace.folder, command=command, timeout=lock_timeout):
            desired = workspace.load()
            return converge(
                workspace,
                docker(workspace, desired),
                desired=desired,
                check=False,
                health_timeout=health_timeout,
                on_plan=on_plan,
                hold_rolled_back=True,
            )

    return reconcile


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `lbrec watch` beyond the common -f and --lock-timeout/--health-timeout."""
    parser.add_argument(
        "--resync",
        type=duration_arg,
        default=30.0,
        metavar="DURATION",
        help="reconcile at least this often, to repair drift (default 30; 0 disables)",
    )
    parser.add_argument(
        "--debounce",
        type=duration_arg,
        default=QUIET_PERIOD,
        metavar="DURATION",
        help="apply a saved file only once it has stayed unchanged this long, so that a save "
        f"in progress is never applied (default {QUIET_PERIOD})",
    )
    parser.add_argument(
        "--no-docker-events",
        dest="docker_events",
        action="store_false",
        help="do not follow `docker events` (drift is then repaired at the next --resync)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")


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
                extra={"pass": loop.passes, "action": action.kind.value, "backend": action.backend},
            )

    return show


@contextmanager
def stop_on_signals(stop: Callable[[], None], announce: Callable[[str], None]) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop after the current pass. Second: KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if seen:
            raise KeyboardInterrupt
        seen.append(signum)
        announce(f"{signal.Signals(signum).name}: stopping after the current pass")
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_thread_until_stopped(thread: threading.Thread) -> None:
    """Join in short slices so the main thread stays responsive to signals."""
    while thread.is_alive():
        thread.join(0.2)


def build_watch_loop(
    file: str | Path,
    *,
    resync: float = 30.0,
    debounce: float = QUIET_PERIOD,
    lock_timeout: float = 300.0,
    health_timeout: float = 60.0,
    docker: DockerFactory = whales_docker,
    docker_events: bool = True,
) -> WatchLoop:
    """The real watch loop for ``file`` (logging each planned change); for run_watch and `up`.

    With ``docker_events`` it also reacts at once when one of the project's containers stops
    or is removed (the project name is read from the file now; a rename needs a restart).
    """
    workspace = Workspace.at(file)
    project = None
    if docker_events:
        try:
            project = workspace.load().project
        except LbrecError:
            project = None  # an invalid file: the loop reports it; resync still repairs drift

    def on_plan(the_plan: Plan) -> None:
        log_plan(watch.loop)(the_plan)

    watch = WatchLoop(
        workspace.spec_file,
        make_reconcile(
            workspace,
            docker=docker,
            lock_timeout=lock_timeout,
            health_timeout=health_timeout,
            on_plan=on_plan,
        ),
        resync=resync or None,
        debounce=debounce,
        docker_project=project,
    )
    return watch


def run_watch(
    file: str | Path,
    *,
    resync: float = 30.0,
    debounce: float = QUIET_PERIOD,
    log_format: Literal["text", "json"] = "text",
    lock_timeout: float = 300.0,
    health_timeout: float = 60.0,
    docker: DockerFactory = whales_docker,
    docker_events: bool = True,
) -> int:
    """`lbrec watch`: runs until SIGINT/SIGTERM; 0 on a clean stop, 130 on a forced one."""
    log = configure_logging(log_format, name="watch")
    workspace = Workspace.at(file)
    if not workspace.folder.is_dir():
        log.error("%s: no such folder", workspace.folder)
        return 2

    watch = build_watch_loop(
        workspace.spec_file,
        resync=resync,
        debounce=debounce,
        lock_timeout=lock_timeout,
        health_timeout=health_timeout,
        docker=docker,
        docker_events=docker_events,
    )
    with stop_on_signals(watch.stop, log.info):
        try:
            run_thread_until_stopped(watch.start())
        except KeyboardInterrupt:
            log.warning("interrupted during a pass")
            return 130
    return 0
