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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.audit import outcome_of
from ..core.errors import LbrecError
from ..core.report import Report
from ..core.schedule import Backoff, PassOutcome, Schedule, is_permanent

if TYPE_CHECKING:
    from .metrics import LoopMetrics

__all__ = [
    "ControlLoop",
    "describe_failures",
]

Reconcile = Callable[[], Report]

# The audit log's outcome -> the metric's label (``changed`` kept for a deploy).
_METRIC = {"deployed": "changed", "rolled_back": "failed"}


class Trigger(Protocol):
    """Something that notifies the loop (it was given ``notify`` when it was made)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


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
        backoff: Backoff | None = None,
        retry_permanent_after: float | None = None,
        permanent_hint: str = "waiting for the input to change",
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        banner: str = "",
        metrics: LoopMetrics | None = None,
        folder: Path | None = None,
    ) -> None:
        """``metrics``: where passes are counted (the process's :data:`LOOP_METRICS` by
        default); ``folder``: the deploy folder, for the deployed revision they report."""
        self._reconcile = reconcile
        if metrics is None:
            from .metrics import LOOP_METRICS

            metrics = LOOP_METRICS
        self._metrics = metrics
        metrics.follow(name, folder or Path.cwd())
        self.banner = banner  # logged when the loop starts
        self._triggers: list[Trigger] = []
        self.name = name
        self._schedule = Schedule(
            resync=resync,
            debounce=debounce,
            max_delay=max_delay,
            backoff=backoff or Backoff(),
            retry_permanent_after=retry_permanent_after,
        )
        self._permanent_hint = permanent_hint
        self._clock = clock
        self._log = logger or logging.getLogger(f"lbrec.{name}")
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.passes = 0
        self._come_back: float | None = None  # the last pass's back-off (a crash loop)
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
                self._log.info("%s", self.banner, extra={"event": "loop_start"})
            self._run()
        finally:
            for trigger in reversed(started):
                trigger.stop()
            self._log.info(
                "stopped after %d passes",
                self.passes,
                extra={"event": "loop_stop", "passes": self.passes},
            )

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
                delay = self._schedule.end(self._clock(), outcome, come_back=self._come_back)
            if outcome is PassOutcome.TEMPORARY and delay is not None:
                self._log.info(
                    "pass=%d retry in %gs",
                    self.passes,
                    delay,
                    extra={"event": "pass_retry", "pass": self.passes, "delay": delay},
                )

    def _one_pass(self, reason: str) -> PassOutcome:
        self.passes += 1
        n = self.passes
        extra: dict[str, Any] = {"pass": n, "reason": reason}
        routine = reason == "resync"  # a resync that changes nothing logs one line, not two
        self._log.log(
            logging.DEBUG if routine else logging.INFO,
            "pass=%d start (%s)",
            n,
            reason,
            extra={**extra, "event": "pass_start"},
        )
        started = self._clock()
        self._come_back = None
        try:
            report = self._reconcile()
        except LbrecError as err:
            permanent = is_permanent(err)
            self._count(reason, "invalid" if permanent else "failed", self._clock() - started)
            self.last_error = err.message
            if permanent:
                self._log.error(
                    "pass=%d invalid: %s; not applied, the last good state keeps running; %s",
                    n,
                    err.message,
                    self._permanent_hint,
                    extra={
                        **extra,
                        "event": "pass_invalid",
                        "error": err.message,
                        "kind": type(err).__name__,
                    },
                )
                return self._done(PassOutcome.PERMANENT)
            self._log.error(
                "pass=%d failed: %s: %s",
                n,
                type(err).__name__,
                err.message,
                extra={
                    **extra,
                    "event": "pass_failed",
                    "error": err.message,
                    "kind": type(err).__name__,
                },
            )
            return self._done(PassOutcome.TEMPORARY)
        except Exception as err:  # a bug must not end a controller: log it and back off
            self._count(reason, "failed", self._clock() - started)
            self.last_error = f"{type(err).__name__}: {err}"
            self._log.exception(
                "pass=%d crashed: %s", n, self.last_error, extra={**extra, "event": "pass_crashed"}
            )
            return self._done(PassOutcome.TEMPORARY)
        elapsed = self._clock() - started
        said = outcome_of(report)  # the audit log's word for it (core/audit.py)
        self._count(reason, _METRIC.get(said, said), elapsed, generation=report.generation)
        if report.preempted and not report.failed:
            # Not a failure: a newer change (an edit, a commit, the engine's return) cut it
            # short and goes first; one more pass follows it (it waits for the lock).
            why = "; ".join(o.error or "preempted" for o in report.cut_short)
            self.last_error = None
            self._log.info(
                "pass=%d preempted in %.1fs: %s",
                n,
                elapsed,
                why,
                extra={**extra, "event": "pass_preempted", "error": why},
            )
            with self._cond:
                self._schedule.event(self._clock(), "after a preempted pass")
            return self._done(PassOutcome.OK)
        if report.failed:
            names = describe_failures(report)
            self.last_error = names
            self._log.error(
                "pass=%d failed backends: %s",
                n,
                names,
                extra={**extra, "event": "pass_failed", "error": names},
            )
            return self._done(PassOutcome.TEMPORARY)
        self.last_error = None
        recap = report.recap()
        self._come_back = report.retry_in
        what = {"in_sync": "in sync"}.get(said, said)
        if report.deferred:  # what it left alone, and why (a held version, a back-off)
            what += (
                " (" + "; ".join(f"{o.action.backend}: {o.detail}" for o in report.deferred) + ")"
            )
        self._log.info(
            "pass=%d %sok in %.1fs: %s generation=%s",
            n,
            "resync " if routine else "",
            elapsed,
            what,
            report.generation or "-",
            extra={
                **extra,
                "event": "pass_ok",
                "outcome": said,
                "changed": report.changed,
                "recap": recap,
                "duration_s": round(elapsed, 3),
            },
        )
        return self._done(PassOutcome.OK)

    def _count(self, reason: str, outcome: str, seconds: float, *, generation: str = "") -> None:
        self._metrics.record(
            self.name,
            reason=reason,
            outcome=outcome,
            seconds=max(seconds, 0.0),
            generation=generation,
            at=time.time(),
        )

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
