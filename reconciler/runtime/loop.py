"""EDGE. The one control loop of ``lbrec watch``, ``lbrec sync`` and ``lbrec up``.

One worker runs a level-triggered ``reconcile()`` (it takes no event: an event only means
"something may have changed") when it is notified, after a debounce, and every ``resync``
seconds. Events that arrive during a pass mark the loop dirty: exactly one more pass follows.
A failed pass is retried with capped exponential backoff; a permanent failure (invalid input)
waits for the next notification. When to run is decided by :class:`Schedule`, a plain state
machine over timestamps that tests drive without threads or a clock.

What makes a pass due is attached as *triggers* (a file watch, the `docker events` stream): the
loop starts them when it runs and stops them when it ends; a webhook or a git poll calls
:meth:`ControlLoop.notify` (sync's resync interval is its poll). The pass itself is
runtime/passes.py's ``run_pass``, for every command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from proxy.logs import configure_logging as configure_lbrec_logging

from ..core.errors import LbrecError, PortInUse, SpecError, UsageError
from ..core.report import Report

__all__ = [
    "Backoff",
    "ControlLoop",
    "Due",
    "PassOutcome",
    "Schedule",
    "configure_logging",
    "describe_failures",
    "is_permanent",
]

Reconcile = Callable[[], Report]


class Trigger(Protocol):
    """Something that notifies the loop (it was given ``notify`` when it was made)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


class PassOutcome(StrEnum):
    OK = "ok"
    TEMPORARY = "temporary"  # retry with backoff: no engine, build failed, unhealthy backend
    PERMANENT = "permanent"  # invalid input: wait until it changes


def is_permanent(err: BaseException) -> bool:
    """Invalid input is permanent; a port taken by another process may free up, so it is not."""
    return isinstance(err, SpecError | UsageError) and not isinstance(err, PortInUse)


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        """Seconds before retry number ``failures`` (1-based): 1, 2, 4 ... capped."""
        if failures < 1:
            return 0.0
        return float(min(self.maximum, self.initial * self.factor ** (failures - 1)))


@dataclass(frozen=True, slots=True)
class Due:
    at: float
    reason: str


class Schedule:
    """PURE. When the next pass is due, given events, pass results and timestamps.

    Not thread-safe on its own: :class:`ControlLoop` calls it under its lock.
    """

    def __init__(
        self,
        *,
        resync: float | None,
        debounce: float,
        max_delay: float,
        backoff: Backoff,
        retry_permanent_after: float | None = None,
    ) -> None:
        self.resync = resync
        self.debounce = debounce
        self.max_delay = max(max_delay, debounce)
        self.backoff = backoff
        self.retry_permanent_after = retry_permanent_after
        self.pending_reason: str | None = None
        self.immediate = False
        self.drift_only = False  # every pending event is drift (docker events), no edit
        self.first_event = 0.0
        self.last_event = 0.0
        self.failures = 0
        self.retry_at: float | None = None
        self.parked = False
        self.last_end = 0.0

    def event(
        self, now: float, reason: str, *, immediate: bool = False, drift: bool = False
    ) -> None:
        """Something may have changed; ``immediate`` skips the debounce (start, webhook).

        ``drift`` events (a container of the project stopped or went) do not cut a backoff
        short: a rollout that failed removes its new containers itself, and their events must
        not restart the same broken version in a tight loop. An edit or a commit does."""
        if self.pending_reason is None:
            self.pending_reason = reason
            self.first_event = now
            self.drift_only = drift
        else:
            self.drift_only = self.drift_only and drift
        self.last_event = now
        self.immediate = self.immediate or immediate

    def next_due(self) -> Due | None:
        if self.pending_reason is not None:
            if self.immediate:
                at = self.first_event
            else:
                at = min(self.last_event + self.debounce, self.first_event + self.max_delay)
            if self.drift_only and self.retry_at is not None:
                at = max(at, self.retry_at)
            return Due(at, self.pending_reason)
        if self.retry_at is not None:
            return Due(self.retry_at, f"retry {self.failures}" if not self.parked else "retry")
        if self.parked or self.resync is None:
            return None
        return Due(self.last_end + self.resync, "resync")

    def begin(self) -> None:
        """A pass starts: it sees every event so far, so they are consumed."""
        self.pending_reason = None
        self.immediate = False
        self.drift_only = False

    def end(self, now: float, outcome: PassOutcome) -> float | None:
        """Record a pass result; returns the retry delay when one is scheduled."""
        self.last_end = now
        match outcome:
            case PassOutcome.OK:
                self.failures, self.retry_at, self.parked = 0, None, False
                return None
            case PassOutcome.TEMPORARY:
                self.failures += 1
                self.parked = False
                delay = self.backoff.delay(self.failures)
                self.retry_at = now + delay
                return delay
            case PassOutcome.PERMANENT:
                self.failures, self.parked = 0, True
                after = self.retry_permanent_after
                self.retry_at = None if after is None else now + after
                return after


class ControlLoop:
    """One worker thread's loop: ``run()`` blocks until :meth:`stop`; ``start()`` threads it.

    ``notify(reason)`` is thread-safe and cheap (watchdog threads, signal handlers, webhooks).
    """

    def __init__(
        self,
        reconcile: Reconcile,
        *,
        name: str,
        resync: float | None = 30.0,
        debounce: float = 0.1,
        max_delay: float = 2.0,
        backoff: Backoff = Backoff(),
        retry_permanent_after: float | None = None,
        permanent_hint: str = "waiting for the input to change",
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        banner: str = "",
    ) -> None:
        self._reconcile = reconcile
        self.banner = banner  # logged when the loop starts
        self._triggers: list[Trigger] = []
        self.name = name
        self._schedule = Schedule(
            resync=resync,
            debounce=debounce,
            max_delay=max_delay,
            backoff=backoff,
            retry_permanent_after=retry_permanent_after,
        )
        self._permanent_hint = permanent_hint
        self._clock = clock
        self._log = logger or logging.getLogger(f"lbrec.{name}")
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.last_outcome: PassOutcome | None = None
        self.last_error: str | None = None

    def attach(self, trigger: Trigger) -> None:
        """Start ``trigger`` with the loop and stop it when the loop ends."""
        self._triggers.append(trigger)

    # -- called from any thread ---------------------------------------------------------
    def notify(self, reason: str, *, immediate: bool = False, drift: bool = False) -> None:
        with self._cond:
            self._schedule.event(self._clock(), reason, immediate=immediate, drift=drift)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def logger(self) -> logging.Logger:
        return self._log

    @property
    def resync(self) -> float | None:
        return self._schedule.resync

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread (for `lbrec up`); stop it with stop() + join()."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} loop already started")
        self._thread = threading.Thread(target=self.run, name=f"lbrec-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread started by start(); True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the worker ---------------------------------------------------------------------
    def run(self) -> None:
        started: list[Trigger] = []
        try:
            for trigger in self._triggers:
                trigger.start()
                started.append(trigger)
            if self.banner:
                self._log.info("%s", self.banner)
            self._run()
        finally:
            for trigger in reversed(started):
                trigger.stop()
            self._log.info("stopped after %d passes", self.passes)

    def _run(self) -> None:
        with self._cond:
            if self.passes == 0:
                self._schedule.event(self._clock(), "start", immediate=True)
        while True:
            with self._cond:
                if self._stopping:
                    return
                due = self._schedule.next_due()
                now = self._clock()
                if due is None or due.at > now:
                    self._cond.wait(None if due is None else due.at - now)
                    continue
                self._schedule.begin()
            outcome = self._one_pass(due.reason)
            with self._cond:
                delay = self._schedule.end(self._clock(), outcome)
            if outcome is PassOutcome.TEMPORARY and delay is not None:
                self._log.info(
                    "pass=%d retry in %gs", self.passes, delay, extra={"pass": self.passes}
                )

    def _one_pass(self, reason: str) -> PassOutcome:
        self.passes += 1
        n = self.passes
        extra: dict[str, Any] = {"pass": n, "reason": reason}
        routine = reason == "resync"  # a resync that changes nothing logs one line, not two
        self._log.log(
            logging.DEBUG if routine else logging.INFO, "pass=%d start (%s)", n, reason, extra=extra
        )
        started = self._clock()
        try:
            report = self._reconcile()
        except LbrecError as err:
            self.last_error = err.message
            if is_permanent(err):
                self._log.error(
                    "pass=%d invalid: %s; not applied, the last good state keeps running; %s",
                    n,
                    err.message,
                    self._permanent_hint,
                    extra={**extra, "error": err.message, "kind": type(err).__name__},
                )
                return self._done(PassOutcome.PERMANENT)
            self._log.error(
                "pass=%d failed: %s: %s",
                n,
                type(err).__name__,
                err.message,
                extra={**extra, "error": err.message, "kind": type(err).__name__},
            )
            return self._done(PassOutcome.TEMPORARY)
        except Exception as err:  # a bug must not end a controller: log it and back off
            self.last_error = f"{type(err).__name__}: {err}"
            self._log.exception("pass=%d crashed: %s", n, self.last_error, extra=extra)
            return self._done(PassOutcome.TEMPORARY)
        elapsed = self._clock() - started
        if report.failed:
            names = describe_failures(report)
            self.last_error = names
            self._log.error(
                "pass=%d failed backends: %s", n, names, extra={**extra, "error": names}
            )
            return self._done(PassOutcome.TEMPORARY)
        self.last_error = None
        recap = report.recap()
        self._log.info(
            "pass=%d %sok in %.1fs: %s generation=%s",
            n,
            "resync " if routine else "",
            elapsed,
            "changed" if report.changed else "in sync",
            report.generation or "-",
            extra={**extra, "changed": report.changed, "recap": recap},
        )
        return self._done(PassOutcome.OK)

    def _done(self, outcome: PassOutcome) -> PassOutcome:
        self.last_outcome = outcome
        return outcome


def describe_failures(report: Report) -> str:
    """``b1: not healthy after 60s; b2: build failed: ...``, each backend named once."""
    parts = []
    for o in report.failed:
        error = o.error or "failed"
        name = o.action.backend
        parts.append(error if error.startswith(f"{name}:") else f"{name}: {error}")
    return "; ".join(parts)


def configure_logging(fmt: Literal["text", "json"] = "text", *, name: str) -> logging.Logger:
    """The one logging set-up (proxy/logs.py: text or JSON lines on stderr for every `lbrec`
    logger, the proxy's too); returns ``lbrec.<name>``."""
    configure_lbrec_logging(fmt)
    return logging.getLogger(f"lbrec.{name}")
