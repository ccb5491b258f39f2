"""Maintenance mode (issue 23): ``lbrec pause ROUTE|--all`` answers 503 with ``Retry-After`` and
the route's page at once, without touching a container; ``lbrec resume`` restores.

The state is a file of its own, ``maintenance.json`` beside backends.json (``config/``, which the
lb container mounts too): the reconciler writes it atomically, outside any pass and its lock
(a pause acts during a long rollout too), and the proxy follows it as it follows the pool (a
stat per poll). It survives a restart of the proxy, and of lbrec, until ``lbrec resume``.
It is not part of backends.json on purpose: no pass, no generation change, no reload of the
pool, and a pass never overwrites a pause.

This module is the single home of the file's format (:class:`MaintenanceState`, written by
reconciler/adapters/maintenance_file.py, read here), the pure answer of a paused route
(:func:`paused_answer`), and the *hold* (:class:`HoldGate`): with ``hold`` seconds, a request
to a paused route waits up to that long for the resume before it gets its 503, so that a short
migration costs no error (kamal-proxy's pause). Waiting requests are bounded in number.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import MaintenanceSettings, format_validation_error
from .pages import Page

__all__ = [
    "MAINTENANCE_FILE",
    "HoldGate",
    "MaintenanceFile",
    "MaintenanceState",
    "Pause",
    "parse_state",
    "paused_answer",
]

MAINTENANCE_FILE = "maintenance.json"  # beside backends.json
DEFAULT_TEXT = b"Down for maintenance; please try again shortly.\n"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pause(_Model):
    """One pause: since when, and what `lbrec pause` said (each None: the route's settings)."""

    since: float = Field(ge=0, description="seconds since the epoch")
    message: str | None = Field(default=None, max_length=1000)
    hold: float | None = Field(default=None, ge=0, le=300)
    retry_after: float | None = Field(default=None, ge=0, le=86400)


class MaintenanceState(_Model):
    """The whole of maintenance.json: every route paused (``all``), or some, by route key
    (``host/path`` as in logs and metrics; ``*/`` for a route without a host)."""

    version: int = 1
    all: Pause | None = None
    routes: dict[str, Pause] = Field(default_factory=dict)

    def pause_of(self, route: str | None) -> Pause | None:
        """PURE. The pause that holds a route (None: the plain pool without routes)."""
        if route is not None:
            own = self.routes.get(route)
            if own is not None:
                return own
        return self.all

    @property
    def active(self) -> bool:
        return self.all is not None or bool(self.routes)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


NOT_PAUSED = MaintenanceState()


def parse_state(text: str, *, source: str) -> MaintenanceState:
    """The state in ``text``; ValueError naming ``source`` and the field when it is bad."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: line {err.lineno} column {err.colno}: {err.msg}") from err
    try:
        return MaintenanceState.model_validate(data)
    except ValidationError as err:
        raise ValueError(format_validation_error(err, source=source)) from err


def paused_answer(
    pause: Pause, settings: MaintenanceSettings | None, page: Page | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """PURE. The 503 of a paused route: status, header fields, body (the page with the
    message in place of ``{{message}}``, else the message, else a built-in line)."""
    retry = pause.retry_after
    if retry is None:
        retry = settings.retry_after if settings is not None else 30.0
    headers = [
        (b"Retry-After", b"%d" % max(1, math.ceil(retry))),
        (b"Cache-Control", b"no-store"),
    ]
    if page is not None:
        body = page.with_message(pause.message)
        headers.append((b"Content-Type", page.content_type))
    else:
        body = (pause.message + "\n").encode("utf-8") if pause.message else DEFAULT_TEXT
        headers.append((b"Content-Type", b"text/plain; charset=utf-8"))
    return 503, headers, body


def hold_of(pause: Pause, settings: MaintenanceSettings | None) -> float:
    """How long a request waits for the resume: `pause --hold`, else the route's ``hold``."""
    if pause.hold is not None:
        return pause.hold
    return settings.hold if settings is not None else 0.0


class HoldGate:
    """The current state, and the requests waiting for a resume. One per worker; ``update``
    is called by whatever follows the file (:class:`MaintenanceFile`), on the event loop."""

    def __init__(self, state: MaintenanceState = NOT_PAUSED, *, max_waiting: int = 10_000) -> None:
        self.state = state
        self.max_waiting = max_waiting
        self.waiting = 0
        self._changed = asyncio.Event()

    def update(self, state: MaintenanceState) -> None:
        """A new state: every waiting request looks again."""
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(
        self, route: str | None, hold: float, *, clock: Callable[[], float] = time.monotonic
    ) -> Pause | None:
        """Wait up to ``hold`` seconds for ``route`` to be resumed: None when it is (or was
        not paused), else the pause still holding it (answer 503). Past ``max_waiting``
        requests already waiting, the pause at once."""
        pause = self.state.pause_of(route)
        if pause is None or hold <= 0:
            return pause
        if self.waiting >= self.max_waiting:
            return pause
        deadline = clock() + hold
        self.waiting += 1
        try:
            while pause is not None:
                left = deadline - clock()
                if left <= 0:
                    return pause
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=left)
                pause = self.state.pause_of(route)
            return None
        finally:
            self.waiting -= 1


class MaintenanceFile:
    """Follows ``maintenance.json`` beside a backends.json: :meth:`poll` re-reads it when its
    identity (inode, size, mtime) changed. A missing file is "nothing paused"; a bad one keeps
    the last good state and is reported (``error``), as a bad backends.json is."""

    def __init__(self, pool_file: Path) -> None:
        self.path = pool_file.parent / MAINTENANCE_FILE
        self.state = NOT_PAUSED
        self.error: str | None = None
        self._seen: tuple[int, int, int] | None = None

    def poll(self) -> bool:
        """Re-read the file if it changed; True when the state changed."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._seen = None
            self.error = None
            changed = self.state != NOT_PAUSED
            self.state = NOT_PAUSED
            return changed
        except OSError as err:
            self.error = f"{self.path}: {err.strerror or err}"
            return False
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            state = parse_state(self.path.read_text(encoding="utf-8"), source=str(self.path))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            self.error = str(err)
            return False
        self.error = None
        changed = state != self.state
        self.state = state
        return changed

    async def follow(self, gate: HoldGate, *, interval: float = 0.25) -> None:
        """Poll every ``interval`` seconds and tell ``gate``; runs until cancelled."""
        while True:
            if self.poll():
                gate.update(self.state)
            await asyncio.sleep(interval)
