"""A bounded load through a proxy on loopback, for the tests that measure what clients see
while something fails underneath (an engine restart, a node lost).

Threads on keep-alive connections, bounded in count (``max_requests``), time (``seconds``)
and rate (``pause`` between requests); every answer is recorded as ``(monotonic time, status,
who)``: ``who`` is the answering backend's ``X-Backend`` header, or the exception's name with
status 0 when no answer came (a refused or reset connection, a timeout).
tests/integration/test_swarm_nodes.py uses it too, at its own pace (``failed()`` and
``total()``).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Answer", "Load"]

Answer = tuple[float, int, str]  # (monotonic time, status or 0, X-Backend or the error)


@dataclass
class Load:
    """``start()``/``stop()``, or ``with Load(port) as load:`` (which waits for the first
    ``warm_up`` answers, and lets ``settle`` seconds pass before it stops)."""

    port: int
    threads: int = 4
    max_requests: int = 60_000
    seconds: float = 400.0
    pause: float = 0.02
    timeout: float = 10.0
    warm_up: int = 20
    settle: float = 1.0
    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.answers) >= self.max_requests:
                    break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                answer = (time.monotonic(), response.status, response.getheader("X-Backend") or "")
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                answer = (time.monotonic(), 0, type(err).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.answers.append(answer)
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def __enter__(self) -> Load:
        self.start()
        deadline = time.monotonic() + 30
        while self.total() < self.warm_up:
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the load did not get going: {self.total()} answers in 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        time.sleep(self.settle)
        self.stop()

    def between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if start <= a[0] < end]

    def failed(self, since: float = 0.0) -> list[str]:
        """Why each request since ``since`` failed: its status (not 2xx) or the error."""
        with self._lock:
            return [
                str(status) if status else who
                for at, status, who in self.answers
                if at >= since and not 200 <= status < 300
            ]

    def total(self, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for at, _status, _who in self.answers if at >= since)
