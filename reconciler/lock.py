"""EDGE. The project lock: an flock that dies with its process, so never a stale lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LockTimeout

__all__ = ["LOCK_FILE", "project_lock"]

LOCK_FILE = ".lbrec.lock"


@contextlib.contextmanager
def project_lock(
    folder: Path,
    *,
    command: str,
    timeout: float = 300.0,
    on_wait: Callable[[str], None] | None = None,
    poll: float = 0.1,
) -> Iterator[None]:
    """Hold an exclusive flock on ``folder/.lbrec.lock`` for the duration of the block.

    Waits up to ``timeout`` seconds for another holder, calling ``on_wait`` once with a message
    naming it. The lock file records the holder (pid, command) for that message only; the lock
    itself is the kernel's and is released when the process exits, however it exits.
    """
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if not told and on_wait is not None:
                    on_wait(f"waiting for the lock on {path} held by {holder}")
                    told = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path}: still locked by {holder} after {timeout:g}s",
                        hint="wait for that command to finish, or raise --lock-timeout",
                    ) from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another lbrec process"
