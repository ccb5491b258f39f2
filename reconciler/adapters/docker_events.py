"""EDGE. The `docker events` stream of a project: drift noticed at once, and the engine's return."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable

from ..core.labels import BACKEND, PROJECT


def tied_to_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM when lbrec dies, even by ``kill -9`` (Linux:
    util-linux ``setpriv --pdeathsig``; no ``preexec_fn``, which is unsafe with threads)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *cmd] if setpriv else cmd


class DockerEvents:
    """Follow ``docker events`` for one project's containers in a thread (drift, at once).

    Calls ``on_event("die backend1")`` when one of the project's containers stops, dies or is
    removed, so a watch loop repairs drift without waiting for its resync. The ``docker events``
    process is our own child: it is terminated by pid on :meth:`stop`, and restarted (after a
    pause) if it ends while we still want events, e.g. when the engine restarts.
    """

    _ACTIONS = ("die", "destroy", "stop", "kill", "oom")
    # While the engine is away, `docker events` is started again every RETRY s (it fails at
    # once); one that has stayed up ALIVE s means the engine is back. Small: containers that
    # stopped during the outage are routed again within about 2 s of its end.
    RETRY = 0.5
    ALIVE = 0.3

    def __init__(
        self,
        project: str,
        on_event: Callable[[str], None],
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """``on_lost()`` is called (in this thread, at once) when a stream that was up ends:
        the engine went away, and may hand its containers' ports to others when it is back
        (the pool is frozen: adapters/engine_epoch.py)."""
        self.project = project
        self.on_event = on_event
        self.on_lost = on_lost
        self._up = threading.Event()  # the current stream has stayed up ALIVE s
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def _command(self) -> list[str]:
        cmd = ["docker", "events", "--filter", "type=container"]
        cmd += ["--filter", f"label={PROJECT}={self.project}"]
        for action in self._ACTIONS:
            cmd += ["--filter", f"event={action}"]
        return [*cmd, "--format", f'{{{{.Action}}}} {{{{index .Actor.Attributes "{BACKEND}"}}}}']

    def _run(self) -> None:
        lost = False  # a previous stream ended: events may have been missed meanwhile
        while not self._stop.is_set():
            try:
                self._proc = subprocess.Popen(
                    tied_to_parent(self._command()),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
            except OSError:
                self._stop.wait(5.0)
                continue
            self._when_alive(self._proc, reconnected=lost)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                if line.strip():
                    self.on_event(line.strip())
            self._proc.wait()
            if self._up.is_set() and not self._stop.is_set() and self.on_lost is not None:
                self.on_lost()
            self._up.clear()
            lost = True
            self._stop.wait(self.RETRY)  # the engine went away: try again shortly

    def _when_alive(self, proc: subprocess.Popen[str], *, reconnected: bool) -> None:
        """Once a stream has stayed up for ALIVE s it is up (its end is then a loss); a
        restarted one means the engine is back: events during the outage are lost, so ask
        for a pass that re-observes everything at once."""

        def check() -> None:
            if proc.poll() is None and not self._stop.is_set():
                self._up.set()
                if reconnected:
                    self.on_event("reconnected events-stream")

        timer = threading.Timer(self.ALIVE, check)
        timer.daemon = True
        timer.start()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lbrec-docker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)
