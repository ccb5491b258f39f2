"""EDGE. The project lock: an flock on the project folder that dies with its process, so never a
stale lock, and one that deleting a file cannot defeat."""

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
    # The lock is on the folder itself: deleting or replacing .lbrec.lock (which only names
    # the holder for messages) cannot take it away from a holder.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(path)
                if not told and on_wait is not None:
                    on_wait(f"waiting for the lock on {path} held by {holder}")
                    told = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path}: still locked by {holder} after {timeout:g}s",
                        hint="wait for that command to finish, or raise --lock-timeout",
                    ) from None
                time.sleep(poll)
        with contextlib.suppress(OSError):
            info = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(info, f"pid {os.getpid()} ({command})\n".encode())
            finally:
                os.close(info)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(path: Path) -> str:
    try:
        text = path.read_bytes()[:200].decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another lbrec process"
