"""EDGE. Talking to a canary in progress: its state for `lbrec rollout status`, and requests
(`promote`, `promote --full`, `abort`) that the pass running it picks up within 0.2 s.

Both live in `.lbrec/` beside the desired-state file (git-ignored): `rollout.json` holds one
entry per backend whose canary runs (written atomically by that pass), and
`rollout-<backend>.request` holds one pending request. No lock is taken: the pass that runs
the canary holds the project lock, and these files are how other commands reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..core.defaults import STATE_DIR
from ..core.errors import UsageError
from ..core.ports import RolloutDesk, RolloutRequest
from .files import atomic_write, read_text_or_none
from .lock import pid_alive

__all__ = [
    "Request",
    "RolloutFiles",
    "forget_rollback",
    "read_state",
    "remember_rollback",
    "request",
    "rolled_back",
    "take_request",
    "write_state",
]

Request = RolloutRequest
_DIR = STATE_DIR
_STATE = "rollout.json"
_lock = threading.Lock()  # backends roll out side by side in one process


def _state_file(folder: Path) -> Path:
    return folder / _DIR / _STATE


def _request_file(folder: Path, backend: str) -> Path:
    return folder / _DIR / f"rollout-{backend}.request"


def read_state(folder: Path) -> dict[str, dict[str, Any]]:
    """backend -> its canary's state (step, percent, last verdict, pid, alive)."""
    try:
        data = json.loads(read_text_or_none(_state_file(folder)) or "{}")
    except (ValueError, OSError):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, entry in (data if isinstance(data, dict) else {}).items():
        if isinstance(entry, dict):
            entry["alive"] = pid_alive(int(entry.get("pid") or 0))
            out[str(name)] = entry
    return out


def write_state(folder: Path, backend: str, entry: dict[str, Any] | None) -> None:
    """Record (or, with None, clear) the state of ``backend``'s canary."""
    with _lock:
        path = _state_file(folder)
        try:
            data = json.loads(read_text_or_none(path) or "{}")
        except ValueError:
            data = {}
        if entry is None:
            data.pop(backend, None)
        else:
            data[backend] = {**entry, "pid": os.getpid(), "updated": time.time()}
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def request(folder: Path, backend: str | None, what: Request) -> str:
    """Ask the pass running a canary to promote or abort it; the backend it was asked of.
    Without ``backend``, the one canary in progress (an error if none or several)."""
    running = {n: e for n, e in read_state(folder).items() if e.get("alive")}
    if not running:
        raise UsageError("no canary in progress", hint="`lbrec rollout status` lists them")
    if backend is None:
        if len(running) != 1:
            names = ", ".join(sorted(running)) or "none"
            raise UsageError(f"name the backend: canaries in progress: {names}")
        backend = next(iter(running))
    if backend not in running:
        raise UsageError(
            f"no canary in progress for {backend!r}",
            hint="`lbrec rollout status` lists them",
        )
    path = _request_file(folder, backend)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, what + "\n")
    return backend


def take_request(folder: Path, backend: str) -> Request | None:
    """The pending request for ``backend``'s canary, consumed."""
    path = _request_file(folder, backend)
    text = read_text_or_none(path)
    if text is None:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    value = text.strip()
    if value in ("promote", "promote-full", "abort"):
        return value  # type: ignore[return-value]
    return None


# -- versions that were rolled back ----------------------------------------------------------

_ROLLED_BACK = "rolled-back.json"


def rolled_back(folder: Path) -> dict[str, dict[str, Any]]:
    """backend -> {hash, reason, at}: the last version of it that was rolled back."""
    try:
        data = json.loads(read_text_or_none(folder / _DIR / _ROLLED_BACK) or "{}")
    except (ValueError, OSError):
        return {}
    return (
        {str(k): v for k, v in data.items() if isinstance(v, dict)}
        if isinstance(data, dict)
        else {}
    )


def remember_rollback(folder: Path, backend: str, config_hash: str, reason: str) -> None:
    """Under `lbrec up`/`sync` this version is not rolled out again until it changes."""
    _update_rolled_back(folder, backend, {"hash": config_hash, "reason": reason, "at": time.time()})


def forget_rollback(folder: Path, backend: str) -> None:
    if backend in rolled_back(folder):
        _update_rolled_back(folder, backend, None)


def _update_rolled_back(folder: Path, backend: str, entry: dict[str, Any] | None) -> None:
    with _lock:
        data = rolled_back(folder)
        if entry is None:
            data.pop(backend, None)
        else:
            data[backend] = entry
        path = folder / _DIR / _ROLLED_BACK
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class RolloutFiles:
    """``core.ports.RolloutDesk`` over the files of one deploy folder (the engine's view)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write_state(self, backend: str, entry: dict[str, Any] | None) -> None:
        write_state(self.folder, backend, entry)

    def take_request(self, backend: str) -> Request | None:
        return take_request(self.folder, backend)

    def rolled_back(self) -> dict[str, dict[str, Any]]:
        return rolled_back(self.folder)

    def remember_rollback(self, backend: str, config_hash: str, reason: str) -> None:
        remember_rollback(self.folder, backend, config_hash, reason)

    def forget_rollback(self, backend: str) -> None:
        forget_rollback(self.folder, backend)


def _is_a_desk(files: RolloutFiles) -> RolloutDesk:
    return files  # mypy checks the adapter against its port here
