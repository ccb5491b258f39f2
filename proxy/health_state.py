"""Active health, the pure part: the rise/fall state machine and what a probe reports.

No I/O and no client library here: the compiled pool (proxy/pool.py) and the balancer's
callers import this module; the probes that feed it, on aiohttp, are proxy/health.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Protocol

from .config import HealthSettings

__all__ = [
    "FAST_INTERVAL",
    "HealthState",
    "ProbeResult",
    "ProbeTarget",
    "RiseFall",
    "StatusSink",
    "classify_status",
    "next_probe_delay",
]


class HealthState(enum.Enum):
    CHECKING = "checking"
    UP = "up"
    DOWN = "down"


# Like HAProxy's `fastinter`: a backend whose state is not settled yet (a new backend still
# "checking", or an up backend that has started failing) is probed this often, so that a
# backend added at reload gets traffic in a fraction of a second instead of rise x interval.
FAST_INTERVAL = 0.2


def next_probe_delay(state: RiseFall, settings: HealthSettings) -> float:
    """Seconds until the next probe: the interval, or FAST_INTERVAL while in transition."""
    settling = (state.state is HealthState.UP and state.failures) or (
        state.state is HealthState.DOWN and state.successes
    )
    if state.state is HealthState.CHECKING or settling:
        return min(settings.interval, FAST_INTERVAL)
    return settings.interval


@dataclass(frozen=True, slots=True)
class RiseFall:
    """``rise`` successes in a row mark a backend up, ``fall`` failures in a row mark it down.

    A value: :meth:`observe` returns the next state. From CHECKING the first threshold reached
    wins, so a new backend needs ``rise`` good probes before it takes traffic.
    """

    rise: int
    fall: int
    state: HealthState = HealthState.CHECKING
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool) -> RiseFall:
        if ok:
            successes, failures = self.successes + 1, 0
            state = HealthState.UP if successes >= self.rise else self.state
        else:
            successes, failures = 0, self.failures + 1
            state = HealthState.DOWN if failures >= self.fall else self.state
        return replace(self, state=state, successes=successes, failures=failures)

    def with_thresholds(self, *, rise: int, fall: int) -> RiseFall:
        return replace(self, rise=rise, fall=fall)


class StatusSink(Protocol):
    """Receives health transitions (the server turns them into balancer changes)."""

    def set_health(self, name: str, state: HealthState) -> None: ...


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    name: str
    base_url: str  # http://host:port
    path: str | None = None  # this backend's own health path (else the pool-wide one)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One check's outcome. ``code`` and ``reason`` classify it the way HAProxy's check status
    does (``L7OK``, ``L7STS``, ``L7RSP``, ``L7TOUT``, ``L6RSP``, ``L4CON``, ``L4TOUT``);
    ``detail`` keeps the raw text (the status, or the client library's error)."""

    ok: bool
    at: float  # wall-clock seconds (for display only)
    detail: str  # "200" or the error
    code: str = ""
    reason: str = ""  # short: "503", "connection refused"; empty when the code says it all
    duration: float = 0.0  # seconds the check took

    @property
    def summary(self) -> str:
        """``L4CON connection refused in 0ms``, ``L7STS 503 in 2ms``, ``L7TOUT in 500ms``."""
        words = [self.code or ("ok" if self.ok else "failed")]
        if self.reason:
            words.append(self.reason)
        return f"{' '.join(words)} in {round(self.duration * 1000)}ms"


def classify_status(status: int) -> tuple[bool, str, str]:
    """PURE. ``(ok, code, reason)`` of a check answered with ``status``: 2xx/3xx pass."""
    if 200 <= status < 400:
        return True, "L7OK", str(status)
    return False, "L7STS", str(status)
