"""PURE. A crash loop: when the control loop starts a backend's instances again, and when it stops.

A version that converged and then keeps dying is *repaired* by each pass (its instance started
again or replaced). Done at every `docker events` notice, a version that crashes a few seconds
after each start was repaired ~17 times a minute (issue 25 point 4). So the loops (never a
one-shot `lbrec apply`: a person asked) give a backend's repairs a back-off, and after
``restarts`` repairs within ``window`` seconds they stop: the backend is *held* (one failed
pass, one notification; then each pass is ``deferred``) until its version changes or a person
runs `lbrec apply`. An engine restart is not the backend's fault: its history starts again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .schedule import Backoff

__all__ = ["BACKOFF", "RESTARTS", "WINDOW", "RepairRecords", "Verdict", "may_repair"]

RESTARTS = 5  # repairs within WINDOW before the hold
WINDOW = 600.0  # seconds
BACKOFF = Backoff(initial=2.0, maximum=60.0)  # before the 2nd, 3rd ... repair: 2, 4, 8 s ...


class RepairRecords(Protocol):
    """Where the engine keeps what it repaired (``adapters.repair_records.RepairFiles``):
    named JSON objects of backend -> entry."""

    def read(self, name: str) -> dict[str, dict[str, Any]]: ...
    def write(self, name: str, data: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Literal["go", "wait", "hold"]
    wait: float = 0.0  # "wait": seconds until the repair is due
    count: int = 0  # repairs within the window so far

    def describe(self, window: float = WINDOW) -> str:
        minutes = f"{window / 60:g} min" if window >= 60 else f"{window:g}s"
        if self.kind == "hold":
            return (
                f"crash loop: restarted {self.count} times within {minutes}; held, not started "
                "again until its version changes or `lbrec apply`"
            )
        if self.kind == "wait":
            return (
                f"crash loop back-off: restarted {self.count} time(s) within {minutes}; "
                f"next restart in {self.wait:.1f}s"
            )
        return "restart"


def recent(times: Sequence[float], now: float, window: float = WINDOW) -> list[float]:
    """The repair times within ``window`` seconds before ``now``, oldest first."""
    return sorted(t for t in times if now - window < t <= now)


def may_repair(
    times: Sequence[float],
    now: float,
    *,
    restarts: int = RESTARTS,
    window: float = WINDOW,
    backoff: Backoff = BACKOFF,
) -> Verdict:
    """Whether a repair of a backend may go now, given its earlier repairs (``times``)."""
    last = recent(times, now, window)
    n = len(last)
    if n >= restarts:
        return Verdict("hold", count=n)
    if n:
        due = last[-1] + backoff.delay(n)
        if now < due:
            return Verdict("wait", wait=due - now, count=n)
    return Verdict("go", count=n)
