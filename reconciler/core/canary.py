"""PURE. Judging a canary: a new version's own answers over one step, from the proxy's counters.

The proxy keeps, per instance, cumulative counters (requests, failed exchanges, answers by
status class, a first-byte latency histogram). A step's window is the difference of two
snapshots taken at its start and its end, summed over the new version's instances only, so
the old version's figures never mix in. ``canary_verdict`` turns a window into a verdict:

* fewer than ``min_requests`` requests: ``wait`` (the step is extended, never passed on
  too little evidence);
* error rate (5xx answers and failed exchanges, over requests) above ``max_error_rate``, or
  p99 of the first-byte latency above ``max_p99``: ``fail``;
* else ``pass``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ...proxy.stats import LATENCY_BOUNDS, STATUS_CLASSES, percentile

__all__ = ["Counters", "Verdict", "canary_verdict", "counters_of"]

_5XX = STATUS_CLASSES.index("5xx")


@dataclass(frozen=True, slots=True)
class Counters:
    requests: int = 0
    # The proxy's own error count: every 5xx answer and every failed exchange (no answer:
    # connect errors, resets, timeouts), each once.
    errors: int = 0
    status: tuple[int, ...] = (0,) * len(STATUS_CLASSES)
    latency: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS) + 1)

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.requests + other.requests,
            self.errors + other.errors,
            tuple(a + b for a, b in zip(self.status, other.status, strict=True)),
            tuple(a + b for a, b in zip(self.latency, other.latency, strict=True)),
        )

    def __sub__(self, before: Counters) -> Counters:
        """The window between two snapshots (never negative: a restarted counter counts 0)."""
        return Counters(
            max(self.requests - before.requests, 0),
            max(self.errors - before.errors, 0),
            tuple(max(a - b, 0) for a, b in zip(self.status, before.status, strict=True)),
            tuple(max(a - b, 0) for a, b in zip(self.latency, before.latency, strict=True)),
        )

    @property
    def failed(self) -> int:
        """5xx answers and failed exchanges: the proxy counts both in ``errors`` (the status
        split only tells how many of them were answers)."""
        return max(self.errors, self.status[_5XX])

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    def p99(self, bounds: Sequence[float] = LATENCY_BOUNDS) -> float | None:
        return percentile(self.latency, 0.99, bounds)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Literal["pass", "fail", "wait"]
    reason: str


def counters_of(document: Mapping[str, Any], urls: Iterable[str]) -> Counters:
    """The sum of the counters of the instances at ``urls`` in a /-/pool document."""
    wanted = set(urls)
    total = Counters()
    for backend in document.get("backends") or ():
        if not isinstance(backend, dict) or backend.get("url") not in wanted:
            continue
        status = backend.get("status_total") or {}
        latency = backend.get("latency_total") or []
        if len(latency) != len(LATENCY_BOUNDS) + 1:
            latency = [0] * (len(LATENCY_BOUNDS) + 1)
        total = total + Counters(
            int(backend.get("requests") or 0),
            int(backend.get("errors") or 0),
            tuple(int(status.get(name, 0)) for name in STATUS_CLASSES),
            tuple(int(n) for n in latency),
        )
    return total


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def canary_verdict(
    window: Counters, *, max_error_rate: float, max_p99: float | None, min_requests: int
) -> Verdict:
    """The verdict on one step's window of the new version (see the module docstring)."""
    n = window.requests
    if n < max(min_requests, 1):
        return Verdict("wait", f"only {n} requests (min_requests {min_requests})")
    rate = window.error_rate
    if rate > max_error_rate:
        return Verdict("fail", f"error rate {rate:.1%} > {max_error_rate:.1%} over {n} requests")
    p99 = window.p99()
    if max_p99 is not None and p99 is not None and p99 > max_p99:
        return Verdict("fail", f"p99 {_ms(p99)} > {_ms(max_p99)} over {n} requests")
    shown = "-" if p99 is None else _ms(p99)
    return Verdict("pass", f"error rate {rate:.1%}, p99 {shown} over {n} requests")
