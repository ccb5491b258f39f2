"""EDGE. The project lock: an flock on the project folder that dies with its process, so never a
stale lock, and one that deleting a file cannot defeat."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import LockTimeout, UsageError
from .files import open_no_follow, state_dir

__all__ = [
    "LOCK_FILE",
    "WAIT_PREFIX",
    "Held",
    "announced",
    "lock_held",
    "pid_alive",
    "project_lock",
    "waiting_editor",
]

LOCK_FILE = ".lbrec.lock"
# An edit command (init/add/remove) waiting for the lock leaves `.lbrec.wait.<pid>` beside it:
# a pass stuck on a slow rollout sees it and yields, so that an emergency drain is not queued
# behind a backend that hangs (the holder removes its half-made batch and ends its pass).
WAIT_PREFIX = ".lbrec.wait."


def waiting_editor(folder: Path) -> str | None:
    """The edit command waiting for the lock on ``folder`` (alive, not us), if any."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(WAIT_PREFIX)]
    except OSError:
        return None
    for name in sorted(names):
        pid_text = name[len(WAIT_PREFIX) :]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if not pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)  # its waiter died: a leftover
            continue
        return _read_holder(folder / name)
    return None


def pid_alive(pid: int) -> bool:
    """A process with this pid runs (another user's counts); one that has exited and is not
    yet reaped (a zombie) does not: it holds no lock and reads no request."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: what kill said
    fields = stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] not in ("Z", "X")


def lock_held(folder: Path) -> bool:
    """Some process holds the project lock on ``folder`` now (a pass runs)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@dataclass
class Held:
    """What taking the lock took: ``preempted`` is true when this edit command had to wait
    and announced itself, i.e. it cut another pass short (see apply.py)."""

    preempted: bool = False


@contextlib.contextmanager
def project_lock(
    folder: Path,
    *,
    command: str,
    timeout: float = 300.0,
    on_wait: Callable[[str], None] | None = None,
    poll: float = 0.1,
    preempt: bool = False,
    announced: bool = False,
) -> Iterator[Held]:
    """Hold an exclusive flock on the folder for the duration of the block (one function on
    purpose: the acquire loop, the waiting marker and their clean-up share one try/finally).

    Waits up to ``timeout`` seconds for another holder, calling ``on_wait`` once with a message
    naming it. The lock file records the holder (pid, command) for that message only; the lock
    itself is the kernel's and is released when the process exits, however it exits.

    With ``preempt`` (the edit commands), a waiter announces itself (``WAIT_PREFIX``) so that
    a holder in a slow rollout yields the lock early (engine/converge.py); ``announced``: the
    command already did so (:func:`announced`), so it counts as preempting even when the
    holder has let go by now.
    """
    path = folder / LOCK_FILE
    # The lock is on the folder itself: deleting or replacing .lbrec.lock (which only names
    # the holder for messages) cannot take it away from a holder.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    marker = _marker(folder)
    held = Held(preempted=preempt and announced)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # An edit announced itself and waits: it goes first (flock alone is first
                # come, and a waiting `apply` or loop pass would take the lock a yielding
                # pass let go of before the emergency edit it yielded to).
                if not preempt and waiting_editor(folder) is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    raise BlockingIOError
                break
            except BlockingIOError:
                if preempt and not told:
                    with contextlib.suppress(OSError):
                        _write_own(marker, _who(command))
                        held.preempted = True
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
        if preempt:
            with contextlib.suppress(OSError):
                marker.unlink()
        # Never through a link (O_NOFOLLOW): one in the folder would make every pass
        # truncate whatever it points to. A link is refused, naming the path.
        with contextlib.suppress(OSError):
            _write_own(path, _who(command))
        with contextlib.suppress(OSError):  # 0700, before any pass writes into it
            state_dir(folder)
        yield held
    finally:
        if preempt:
            with contextlib.suppress(OSError):
                marker.unlink()
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def announced(folder: Path, command: str) -> Iterator[bool]:
    """An edit command's first act, before its slow start-up (imports, the engine check):
    when another command holds the lock, leave the waiting marker at once, so that a pass
    stuck in a slow rollout starts yielding while this one is still getting ready. Yields
    whether it announced; ``project_lock(preempt=True)`` takes the marker over."""
    marker = _marker(folder)
    wrote = False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # no folder: the command itself reports it
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)  # free: nobody to preempt
    except BlockingIOError:
        with contextlib.suppress(OSError):  # a link there (refused) or no room: not announced
            _write_own(marker, _who(command))
            wrote = True
    finally:
        os.close(fd)
    try:
        yield wrote
    finally:
        if wrote:
            with contextlib.suppress(OSError):
                marker.unlink()


def _marker(folder: Path) -> Path:
    """This process's waiting-editor marker in ``folder``."""
    return folder / f"{WAIT_PREFIX}{os.getpid()}"


def _who(command: str) -> str:
    """What the lock file and a marker say of their process (read by _read_holder)."""
    return f"pid {os.getpid()} ({command})\n"


def _write_own(path: Path, text: str) -> None:
    """Create or truncate ``path`` (a file of lbrec's own) with ``text``, never through a
    symbolic link (:class:`UsageError` naming it); the mode honours the umask."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        fd = open_no_follow(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, UsageError):
        return "another lbrec process"
    try:
        text = os.read(fd, 200).decode(errors="replace").strip()
    except OSError:
        text = ""
    finally:
        os.close(fd)
    return text or "another lbrec process"
