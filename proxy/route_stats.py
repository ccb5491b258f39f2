"""PURE. Per-route counters (issues 22 and 23): answers by status class, admission refusals by
reason, compression and affinity, for ``/metrics`` and the status page.

The series are bounded: one :class:`RouteCounters` per route key of the config (host + path)
and one, :data:`NO_ROUTE`, for the plain pool and for requests no route took (an unknown host
is never a series of its own). Counters of a route that left the config stay until the
process ends (a counter never goes back), bounded by the routes ever configured.
"""

from __future__ import annotations

from typing import Any, Final

from .stats import STATUS_CLASSES

__all__ = ["AFFINITY_KINDS", "NO_ROUTE", "REFUSALS", "RouteCounters", "RouteFigures"]

REFUSALS: Final = ("allow", "basic", "forward", "ratelimit", "concurrency", "maintenance")
"""Why a request was refused at admission (proxy/features.py): a fixed set of reasons."""
NO_ROUTE: Final = "*"
AFFINITY_KINDS: Final = ("new", "kept", "moved")


class RouteCounters:
    """One route's counters; every field only grows."""

    __slots__ = ("affinity", "bytes_in", "bytes_out", "compressed", "refused", "status")

    def __init__(self) -> None:
        self.status = [0] * len(STATUS_CLASSES)  # by STATUS_CLASSES
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.compressed = 0  # answers compressed
        self.bytes_in = 0  # their bytes before compression
        self.bytes_out = 0  # ... and after
        self.affinity = dict.fromkeys(AFFINITY_KINDS, 0)

    def answered(self, status: int) -> None:
        klass = status // 100
        self.status[klass if 1 <= klass <= 5 else 0] += 1

    def doc(self) -> dict[str, Any]:
        return {
            "status": list(self.status),
            "refused": dict(self.refused),
            "compressed": self.compressed,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "affinity": dict(self.affinity),
        }


class RouteFigures:
    """Every route's counters in one worker: the key of a route from the config, or
    :data:`NO_ROUTE` (``None``)."""

    __slots__ = ("by_route",)

    def __init__(self) -> None:
        self.by_route: dict[str, RouteCounters] = {}

    def of(self, route: str | None) -> RouteCounters:
        key = NO_ROUTE if route is None else route
        counters = self.by_route.get(key)
        if counters is None:
            counters = self.by_route[key] = RouteCounters()
        return counters

    def doc(self) -> dict[str, dict[str, Any]]:
        return {key: counters.doc() for key, counters in sorted(self.by_route.items())}
