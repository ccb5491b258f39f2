"""PURE. When the control loop's next pass is due: debounce, resync, backoff, parked on bad input.

A state machine over timestamps (runtime/loop.py drives it under its lock); tests drive it
without threads or a clock."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import LbrecError


class PassOutcome(StrEnum):
    OK = "ok"
    TEMPORARY = "temporary"  # retry with backoff: no engine, build failed, unhealthy backend
    PERMANENT = "permanent"  # invalid input: wait until it changes


def is_permanent(err: BaseException) -> bool:
    """Invalid input is permanent: each error class says whether it is transient (errors.py);
    anything else (a bug) is retried with backoff."""
    return isinstance(err, LbrecError) and not err.transient


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
            if not self.failures:
                return Due(self.retry_at, "back-off")
            return Due(self.retry_at, f"retry {self.failures}" if not self.parked else "retry")
        if self.parked or self.resync is None:
            return None
        return Due(self.last_end + self.resync, "resync")

    def begin(self) -> None:
        """A pass starts: it sees every event so far, so they are consumed."""
        self.pending_reason = None
        self.immediate = False
        self.drift_only = False

    def end(
        self, now: float, outcome: PassOutcome, *, come_back: float | None = None
    ) -> float | None:
        """Record a pass result; returns the retry delay when one is scheduled.

        ``come_back``: a good pass that left a repair for later (a crash loop's back-off) is
        followed by one more pass that many seconds on; drift events wait for it too."""
        self.last_end = now
        match outcome:
            case PassOutcome.OK:
                self.failures, self.parked = 0, False
                self.retry_at = None if come_back is None else now + max(come_back, 0.0)
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
