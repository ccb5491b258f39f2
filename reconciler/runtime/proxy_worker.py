"""EDGE. One worker of ``lbrec up``'s data plane: its ``lbrec proxy`` process, started again
when it exits unasked (at once, then with a back-off while it keeps crashing), logged and
counted; and how a process is known to be ready, or to be one of this folder's proxies.

The supervisor (:class:`.dataplane.ProxySupervisor`) owns the sockets and starts each process
(``spawn``); a :class:`Slot` only watches its own.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .metrics import LOOP_METRICS

if TYPE_CHECKING:
    from .dataplane import ProxySupervisor

__all__ = ["Child", "Slot", "is_our_proxy", "wait_ready"]

_log = logging.getLogger("lbrec.up")

_BACKOFF = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # by crashes in the last minute
_CRASH_WINDOW = 60.0


@dataclass
class Child:
    """A proxy process and when it started (its uptime is logged when it exits)."""

    proc: subprocess.Popen[bytes]
    started: float


class Slot:
    """One worker: its process, started again when it exits unasked."""

    def __init__(self, owner: ProxySupervisor, index: int) -> None:
        self.owner = owner
        self.index = index
        self.child: Child | None = None
        self.crashes: list[float] = []
        self.thread = threading.Thread(
            target=self._run, name=f"proxy-supervisor-{index}", daemon=True
        )

    def start(self) -> None:
        """Start the first process and wait for it to serve (then supervise it)."""
        self.child = self.owner.spawn(self.index)
        self.owner.write_pids()
        self.thread.start()

    def replace(self) -> Child | None:
        """A new process on the supervisor's current sockets; the old one is returned (the
        caller stops it once the new one serves); None, keeping the old, if it failed."""
        try:
            fresh = self.owner.spawn(self.index)
        except OSError as err:
            _log.error("proxy worker %d: a new process did not start: %s", self.index, err)
            return None
        old, self.child = self.child, fresh
        self.owner.write_pids()
        return old

    def _run(self) -> None:
        owner = self.owner
        while True:
            child = self.child
            if child is None:
                return
            code = child.proc.wait()
            if owner.stopping.is_set():
                return
            if self.child is not child:  # replaced (a listener moved): the new one is watched
                continue
            if code == 0 and self.index == 0 and owner.handoff_served_elsewhere():
                _log.warning(
                    "the proxy was taken over by a new `lbrec up` of this folder: standing down",
                    extra={"event": "superseded"},
                )
                owner.superseded.set()
                return
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < _CRASH_WINDOW] + [now]
            delay = _BACKOFF[min(len(self.crashes), len(_BACKOFF)) - 1]
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
            _log.error(
                "proxy worker %d (pid %d) %s after %.1fs; starting it again%s (%d in the last "
                "minute); its listeners were held, clients wait in the accept queue",
                self.index,
                child.proc.pid,
                how,
                now - child.started,
                f" in {delay:g}s" if delay else " at once",
                len(self.crashes),
                extra={"event": "proxy_restart", "worker": self.index, "exit": code},
            )
            LOOP_METRICS.proxy_restarts.labels(str(self.index)).inc()
            if delay and owner.stopping.wait(delay):
                return
            while not owner.stopping.is_set():
                try:
                    self.child = owner.spawn(self.index)
                    owner.write_pids()
                    break
                except OSError as err:
                    _log.error("proxy worker %d did not start: %s; retrying", self.index, err)
                    if owner.stopping.wait(_BACKOFF[-1]):
                        return


def wait_ready(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([fd], [], [], min(left, 0.5))
        if readable:
            return os.read(fd, 16).startswith(b"ready")
        if proc.poll() is not None:
            return False


def is_our_proxy(pid: int, pool_file: Path) -> bool:
    """A process of this user running ``lbrec.proxy`` on this folder's pool."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        uid = Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return False
    return uid == os.getuid() and b"lbrec.proxy" in argv and os.fsencode(pool_file) in argv
