"""EDGE. ``config/maintenance.json``: the pauses of `lbrec pause`, read by the proxy
(proxy/maintenance.py holds the format). Written atomically, 0644 like the pool (the lb
container reads it as another user), under a lock of its own (never the project's: a pause must
act at once, also while a pass holds the project lock through a long rollout)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ...proxy.maintenance import MAINTENANCE_FILE, MaintenanceState, parse_state
from ..core.errors import UsageError
from ..core.render import POOL_FILE
from .files import atomic_write, read_text_or_none, state_dir

__all__ = ["maintenance_path", "read_maintenance", "update_maintenance"]


def maintenance_path(folder: Path) -> Path:
    """Beside the pool file: the proxy finds it without being told (no pass needed)."""
    return (folder / POOL_FILE).parent / MAINTENANCE_FILE


def read_maintenance(folder: Path) -> MaintenanceState:
    path = maintenance_path(folder)
    text = read_text_or_none(path)
    if text is None:
        return MaintenanceState()
    try:
        return parse_state(text, source=str(path))
    except ValueError as err:
        raise UsageError(
            str(err), hint=f"fix or remove {path} (removing it resumes every route)"
        ) from err


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    lock = state_dir(folder) / "maintenance.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_maintenance(
    folder: Path, change: Callable[[MaintenanceState], MaintenanceState]
) -> tuple[MaintenanceState, bool]:
    """Apply ``change`` to the state, under the lock; (the new state, whether it changed)."""
    with _locked(folder):
        state = change(read_maintenance(folder))
        path = maintenance_path(folder)
        if not state.active and not path.exists():
            return state, False
        return state, atomic_write(path, state.to_json(), mode=0o644)
