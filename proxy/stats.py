"""PURE. Recent figures per backend for the status page: a ring of 5-second buckets.

The data path touches only :meth:`BackendStats.first_byte`, once per answer: two list-index
increments (the status class and a fixed latency bucket) and no allocation. Requests and
errors are not counted twice: the admin listener's sampler closes a bucket every
:data:`BUCKET_S` seconds with the backend's running totals (``Backend.requests`` /
``Backend.errors``) and keeps the difference. Percentiles come from the fixed-bucket
histograms, interpolated inside the bucket the way Prometheus' ``histogram_quantile`` does.

No clock and no I/O here: every "now" is an argument.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BUCKETS",
    "BUCKET_S",
    "LATENCY_BOUNDS",
    "STATUS_CLASSES",
    "Answers",
    "BackendStats",
    "Bucket",
    "Window",
    "merge",
    "percentile",
]

BUCKET_S = 5.0
BUCKETS = 120  # 10 minutes

# Upper bounds (seconds) of the latency buckets; one more bucket past the last holds the rest.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip

STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")

# The status class of an answer from its first received bytes: a status line is
# "HTTP/1.1 503 ..." (RFC 9112: the version is exactly 8 characters), so byte 9 is the
# first digit. Anything else counts as "other" (and fails the parser anyway).
_CLASS_OF_BYTE = bytes(c - 0x30 if 0x31 <= c <= 0x35 else 0 for c in range(256))


def percentile(
    hist: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BOUNDS
) -> float | None:
    """The ``q`` quantile (0..1) of a fixed-bucket histogram, or None when it is empty.

    ``hist[i]`` counts values in ``(bounds[i-1], bounds[i]]`` (the first from 0, the last
    past every bound). Linear inside the bucket; the overflow bucket answers its lower bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must be between 0 and 1, got {q!r}")
    if len(hist) != len(bounds) + 1:
        raise ValueError(
            f"histogram has {len(hist)} buckets, expected {len(bounds) + 1} for the bounds"
        )
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(hist):
        if count and seen + count >= rank:
            if index == len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * max(rank - seen, 0.0) / count
        seen += count
    return bounds[-1]  # pragma: no cover - rank <= total always lands above


def merge(histograms: Iterable[Sequence[int]], size: int) -> list[int]:
    """The element-wise sum of histograms (or status splits) of ``size`` buckets."""
    total = [0] * size
    for hist in histograms:
        for index, count in enumerate(hist):
            total[index] += count
    return total


class Answers:
    """Every answer the listener gave since the start, as a client saw it: by status class,
    and a histogram of the time from the request's head to the end of its answer. 503s for
    lack of a backend are counted by reason too. Cumulative only (for ``/metrics``)."""

    __slots__ = ("latency", "latency_sum", "no_backend", "status")

    def __init__(self) -> None:
        self.status = [0] * len(STATUS_CLASSES)
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.no_backend: dict[str, int] = {}

    def answered(self, status: int, elapsed: float) -> None:
        klass = status // 100
        self.status[klass if 1 <= klass <= 5 else 0] += 1
        self.latency[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
        self.latency_sum += elapsed

    def unavailable(self, reason: str) -> None:
        """A 503 because no backend could take the request (``reason``: a metric label)."""
        self.no_backend[reason] = self.no_backend.get(reason, 0) + 1


@dataclass(slots=True)
class Bucket:
    """One closed interval ``(start, end]`` of wall-clock seconds."""

    start: float
    end: float
    requests: int
    errors: int
    status: list[int]  # per STATUS_CLASSES
    latency: list[int]  # per LATENCY_BOUNDS (+ overflow)


@dataclass(frozen=True, slots=True)
class Window:
    """Figures summed over the buckets of a recent span (the open one included)."""

    seconds: float  # the time they cover
    requests: int
    errors: int
    status: list[int]
    latency: list[int]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors_per_s(self) -> float:
        return self.errors / self.seconds if self.seconds > 0 else 0.0


class BackendStats:
    """The ring of one backend: closed buckets, the open one and the state it was last seen in.

    ``status`` and ``latency`` are the open bucket's counters, written by the data path.
    """

    __slots__ = (
        "_errors_seen",
        "_opened",
        "_requests_seen",
        "_retired_latency",
        "_retired_status",
        "latency",
        "latency_sum",
        "ring",
        "since",
        "state",
        "status",
    )

    def __init__(self, *, now: float = 0.0, buckets: int = BUCKETS) -> None:
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets!r}")
        self.status = [0] * len(STATUS_CLASSES)
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0  # seconds, every answer since the start (a histogram's _sum)
        self.ring: deque[Bucket] = deque(maxlen=buckets)
        self._opened = now  # start of the open bucket
        self._requests_seen = 0  # the running totals when the open bucket started
        self._errors_seen = 0
        self._retired_status = [0] * len(STATUS_CLASSES)  # buckets that left the ring
        self._retired_latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.state = ""
        self.since = now

    # -- data path ---------------------------------------------------------------------------

    def first_byte(self, data: bytes, elapsed: float) -> None:
        """An answer's first bytes arrived ``elapsed`` seconds after its request was sent."""
        self.status[_CLASS_OF_BYTE[data[9]] if len(data) > 9 else 0] += 1
        self.latency[bisect_left(LATENCY_BOUNDS, elapsed)] += 1
        self.latency_sum += elapsed

    # -- the sampler ---------------------------------------------------------------------------

    def observe_state(self, state: str, now: float) -> None:
        """Note the displayed state; ``since`` is when it last changed."""
        if state != self.state:
            if self.state or not self.since:
                self.since = now
            self.state = state

    def rotate(self, *, requests: int, errors: int, now: float) -> None:
        """Close the open bucket at ``now``, given the backend's running totals."""
        bucket = Bucket(
            self._opened,
            now,
            max(requests - self._requests_seen, 0),
            max(errors - self._errors_seen, 0),
            self.status,
            self.latency,
        )
        self.status = [0] * len(STATUS_CLASSES)
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self._opened = now
        self._requests_seen = requests
        self._errors_seen = errors
        ring = self.ring
        if len(ring) == ring.maxlen:
            oldest = ring[0]
            for index, count in enumerate(oldest.status):
                self._retired_status[index] += count
            for index, count in enumerate(oldest.latency):
                self._retired_latency[index] += count
        ring.append(bucket)

    # -- views ---------------------------------------------------------------------------------

    def totals(self) -> tuple[list[int], list[int]]:
        """Every answer since the start: (status classes, latency histogram), cumulative, so
        a reader (a canary's judge) diffs two snapshots over any span it likes."""
        status = merge(
            [self._retired_status, self.status, *(b.status for b in self.ring)], len(self.status)
        )
        latency = merge(
            [self._retired_latency, self.latency, *(b.latency for b in self.ring)],
            len(self.latency),
        )
        return status, latency

    def window(self, *, span: float, now: float, requests: int, errors: int) -> Window:
        """The last ``span`` seconds: the open bucket and the closed ones ending after
        ``now - span`` (whole buckets, so it may cover up to one bucket more)."""
        status = list(self.status)
        latency = list(self.latency)
        count = max(requests - self._requests_seen, 0)
        failed = max(errors - self._errors_seen, 0)
        start = self._opened
        for bucket in reversed(self.ring):
            if bucket.end <= now - span:
                break
            start = bucket.start
            count += bucket.requests
            failed += bucket.errors
            for index, value in enumerate(bucket.status):
                status[index] += value
            for index, value in enumerate(bucket.latency):
                latency[index] += value
        return Window(max(now - start, 0.0), count, failed, status, latency)

    def status_totals(self) -> list[int]:
        """Answers by status class since this backend was created."""
        return merge(
            [self._retired_status, self.status, *(b.status for b in self.ring)],
            len(STATUS_CLASSES),
        )

    def series(self) -> dict[str, list[float | None]]:
        """The closed buckets as chart series: end time, requests/s, errors/s, p50 and p99
        (milliseconds, None for a bucket without answers)."""
        out: dict[str, list[float | None]] = {"at": [], "rps": [], "eps": [], "p50": [], "p99": []}
        for bucket in self.ring:
            seconds = bucket.end - bucket.start
            out["at"].append(round(bucket.end, 3))
            out["rps"].append(round(bucket.requests / seconds, 3) if seconds > 0 else 0.0)
            out["eps"].append(round(bucket.errors / seconds, 3) if seconds > 0 else 0.0)
            for name, q in (("p50", 0.5), ("p99", 0.99)):
                value = percentile(bucket.latency, q)
                out[name].append(None if value is None else round(value * 1000, 3))
        return out
