"""EDGE. The audit log of passes (``.lbrec/audit.jsonl``, JSON lines) and the notify webhook.

Every pass appends one line under the project lock (O_APPEND, fsynced): all of it or none of
it (a short write goes on, a failure such as a full disk cuts the file back and raises
:class:`StorageError` naming it), so a reader never sees half a line; past ``MAX_BYTES`` the
log rolls over to ``audit.jsonl.1`` (one old file kept). `lbrec status --history` reads it back.

A ``notify:`` webhook gets the same record as JSON by POST, off the pass's thread: :func:`notify`
only queues it (a bounded queue; when full the oldest record is dropped, counted and logged) and
one delivery thread sends them in order through :mod:`.http_client` (no redirect followed, the
``timeout`` bounds the whole delivery, the answer's body is not read). A receiver that is down,
slow or trickling never delays a pass and never fails one: a failed delivery is logged
(``notify_failed``). At exit the queue gets a bounded wait (:data:`SHUTDOWN_WAIT`) to drain.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from . import http_client
from .files import STATE_DIR, open_no_follow, state_dir, storage_error

__all__ = [
    "AUDIT_FILE",
    "MAX_BYTES",
    "QUEUE_SIZE",
    "SHUTDOWN_WAIT",
    "Notifier",
    "append_record",
    "deliver",
    "flush_notifications",
    "notify",
    "read_history",
]

AUDIT_FILE = f"{STATE_DIR}/audit.jsonl"
MAX_BYTES = 1 << 20

_log = logging.getLogger("lbrec.audit")


def append_record(folder: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line; never through a symbolic link (the log or ``.lbrec``
    being one is a :class:`UsageError` naming it: a link would let the deploy folder make lbrec
    append to any file it can write)."""
    path = state_dir(folder) / Path(AUDIT_FILE).name
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        if path.stat().st_size + len(line) > MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    try:
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    except OSError as err:
        raise storage_error(path, err) from err
    try:
        _append_whole(fd, line, path)
    finally:
        os.close(fd)


def _append_whole(fd: int, line: bytes, path: Path) -> None:
    """Write all of ``line`` or none of it: a short write goes on until done, and a failure
    (no space left) cuts the file back to where it was, so no half record stays to be glued
    to the next one. A torn last line (a crash, from before) is ended first."""
    start = os.fstat(fd).st_size
    if start and os.pread(fd, 1, start - 1) != b"\n":
        line = b"\n" + line  # the torn line stays unreadable on its own; ours stands alone
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise storage_error(path, err) from err


def read_history(folder: Path, last: int) -> list[dict[str, Any]]:
    """The ``last`` records, oldest first (both files; an unreadable line is skipped)."""
    path = folder / AUDIT_FILE
    lines: list[str] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            lines += part.read_text().splitlines()
        except FileNotFoundError:
            continue
    out = []
    for line in lines[-last:] if last > 0 else []:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


QUEUE_SIZE = 100  # records waiting for the receiver; past it the oldest is dropped
SHUTDOWN_WAIT = 10.0  # seconds the process waits at exit for the queue to drain


def deliver(url: str, record: Mapping[str, Any], *, timeout: float) -> str | None:
    """POST ``record`` to ``url`` now, all within ``timeout`` s: None when a 2xx came back,
    else why not (also logged). A redirect is not followed (it is a failed delivery)."""
    try:
        response = http_client.post_json(
            url, record, timeout=timeout, max_body=0, headers={"User-Agent": "lbrec-notify"}
        )
    except http_client.HttpError as err:
        shown, problem = err.url, err.reason
    else:
        if response.ok:
            return None
        shown, problem = response.url, response.describe()
    _log.warning("notify %s: %s", shown, problem, extra={"event": "notify_failed", "url": shown})
    return problem


class _Send(Protocol):
    def __call__(self, url: str, record: Mapping[str, Any], *, timeout: float) -> str | None: ...


class Notifier:
    """A bounded queue of webhook deliveries and the one thread that sends them, in order.

    :meth:`submit` never blocks: when ``capacity`` records already wait, the oldest is dropped
    (``dropped`` counts them; each is logged, ``notify_dropped``). :meth:`flush` waits, at most
    its timeout, until everything submitted has been tried; :meth:`close` flushes, then ends
    the thread (later submissions are dropped)."""

    def __init__(self, *, capacity: int = QUEUE_SIZE, send: _Send = deliver) -> None:
        if capacity < 1:
            raise ValueError(f"notify queue capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._send = send
        self._queue: collections.deque[tuple[str, Mapping[str, Any], float]] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.sent = 0

    def submit(self, url: str, record: Mapping[str, Any], *, timeout: float) -> None:
        """Queue ``record`` for ``url`` (returns at once)."""
        with self._cond:
            if self._closed:
                self._drop(url, record, "the notifier is closed")
                return
            if len(self._queue) >= self._capacity:
                old_url, old_record, _ = self._queue.popleft()
                self._drop(old_url, old_record, f"notify queue full ({self._capacity})")
            self._queue.append((url, dict(record), timeout))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lbrec-notify", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        """Records queued or being delivered."""
        with self._cond:
            return len(self._queue) + self._busy

    def flush(self, timeout: float) -> bool:
        """Wait until every record submitted so far has been tried, at most ``timeout`` s;
        True when none is left."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float) -> bool:
        """Flush (at most ``timeout`` s), then end the delivery thread. True when everything
        was tried; else what is left is logged as not delivered."""
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            left = len(self._queue) + self._busy
            self._cond.notify_all()
        if not flushed:
            _log.warning(
                "notify: %d record(s) not delivered at shutdown (waited %gs)",
                left,
                timeout,
                extra={"event": "notify_dropped", "count": left},
            )
        return flushed

    def _drop(self, url: str, record: Mapping[str, Any], why: str) -> None:
        self.dropped += 1
        _log.warning(
            "%s: dropped the %s record for %s (%d dropped so far)",
            why,
            record.get("outcome", "?"),
            http_client.redact_url(url),
            self.dropped,
            extra={"event": "notify_dropped", "url": http_client.redact_url(url)},
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                url, record, timeout = self._queue.popleft()
                self._busy = True
            try:
                self._send(url, record, timeout=timeout)
            except Exception:  # a bug must not end the delivery thread
                _log.exception("notify %s crashed", http_client.redact_url(url))
            finally:
                with self._cond:
                    self._busy = False
                    self.sent += 1
                    self._cond.notify_all()


_notifier = Notifier()


def notify(url: str, record: Mapping[str, Any], *, timeout: float) -> None:
    """Queue ``record`` for the ``notify:`` webhook at ``url`` (the process's one delivery
    thread sends it; a slow receiver never delays the caller)."""
    _notifier.submit(url, record, timeout=timeout)


def flush_notifications(timeout: float) -> bool:
    """Wait at most ``timeout`` s for the queued notifications to be tried."""
    return _notifier.flush(timeout)


def _at_exit() -> None:
    if _notifier.pending():
        _notifier.close(SHUTDOWN_WAIT)


atexit.register(_at_exit)
