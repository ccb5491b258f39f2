"""Hot reload of ``backends.json``: watch, validate, de-duplicate, swap; keep the last good one.

watchdog observes the file's *directory* and filters on the base name, because the reconciler
replaces the file by atomic rename (the old inode disappears). Events hop to the event loop
with ``call_soon_threadsafe`` and are merged by a short debounce. A one-second ``stat`` poll
backs watchdog up (bind mounts and network filesystems can miss inotify events), and SIGHUP
forces a reload. A file that does not parse or validate is logged once and ignored: the pool
that is serving stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from .config import BackendsConfig, ConfigError, parse_config

__all__ = ["ConfigWatcher", "Reloadable", "read_config"]

_log = logging.getLogger("lbrec.proxy.reload")

_DEBOUNCE = 0.05
_CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})
_POLL_INTERVAL = 1.0


class Reloadable(Protocol):
    def apply_config(self, config: BackendsConfig, *, digest: str = "") -> None: ...

    reload_errors: int
    last_reload_error: str | None
    last_reload_attempt_at: float


def read_config(path: Path) -> tuple[BackendsConfig, str]:
    """Load and validate; returns the config and the sha256 of the bytes it came from."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from err
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8: {err}") from err
    return parse_config(text, source=str(path)), digest


class _Handler(FileSystemEventHandler):
    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, notify: _Notify) -> None:
        self._name = name
        self._loop = loop
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Our own reads raise "opened"/"closed_no_write" events: reacting to them would loop.
        if event.event_type not in _CHANGES:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(os.path.basename(os.fsdecode(p)) == self._name for p in paths if p):
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self._loop.call_soon_threadsafe(self._notify)


class _Notify(Protocol):
    def __call__(self) -> None: ...


class ConfigWatcher:
    """Owns the watchdog observer and the reload task; ``close()`` stops both."""

    def __init__(
        self,
        path: Path,
        target: Reloadable,
        *,
        digest: str,
        check: Callable[[BackendsConfig], None] | None = None,
    ) -> None:
        """``check`` raises :class:`ConfigError` for a valid file that must not be served
        (``lbrec up``: a pool that is not this deployment's); it is then kept out as an
        invalid one is."""
        self._path = path
        self._check = check
        self._target = target
        self._digest = digest  # of the config currently served
        self._bad_digest: str | None = None
        self._stat: tuple[int, int, int] | None = self._stat_now()
        self._event = asyncio.Event()
        self._force = False
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._task: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.checks = 0  # times the file was read (for tests and debugging)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        observer = Observer()
        directory = self._path.parent if str(self._path.parent) else Path(".")
        observer.schedule(
            _Handler(self._path.name, loop, self.notify),
            str(directory),
            event_filter=[
                FileCreatedEvent,
                FileModifiedEvent,
                FileMovedEvent,
                FileDeletedEvent,
                FileClosedEvent,
            ],
        )
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._task = loop.create_task(self._run(), name="config-reload")
        self._poller = loop.create_task(self._poll(), name="config-poll")

    def notify(self, *, force: bool = False) -> None:
        """Something may have changed (file event, poll, SIGHUP): reload soon."""
        self._force = self._force or force
        self._event.set()

    async def close(self) -> None:
        for task in (self._task, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._poller = None
        if self._observer is not None:
            observer = self._observer
            self._observer = None
            observer.stop()
            await asyncio.to_thread(observer.join, 1.0)

    def reload_now(self, *, force: bool = False) -> bool:
        """Read, validate and apply the file. Returns True when a new pool was swapped in."""
        self._stat = self._stat_now()
        self.checks += 1
        try:
            config, digest = read_config(self._path)
            if self._check is not None:
                self._check(config)
        except ConfigError as err:
            message = str(err)
            key = hashlib.sha256(message.encode()).hexdigest()
            self._target.reload_errors += 1
            self._target.last_reload_error = message
            self._target.last_reload_attempt_at = time.time()
            if key != self._bad_digest:  # one log line per distinct bad file
                self._bad_digest = key
                _log.error(
                    "config not reloaded, still serving the previous pool: %s",
                    message.replace("\n", "; "),
                    extra={"event": "reload_error", "error": message},
                )
            return False
        self._bad_digest = None
        self._target.last_reload_error = None
        if digest == self._digest and not force:
            return False
        self._digest = digest
        self._target.apply_config(config, digest=digest)
        return True

    async def _run(self) -> None:
        while True:
            await self._event.wait()
            await asyncio.sleep(_DEBOUNCE)  # merge the burst of events of one replace
            self._event.clear()
            force, self._force = self._force, False
            self.reload_now(force=force)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(_POLL_INTERVAL)
            stat = self._stat_now()
            if stat != self._stat:
                self._stat = stat
                self.notify()

    def _stat_now(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)
