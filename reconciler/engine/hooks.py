"""The executor's outside world, injectable: the proxy, the probe, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..adapters import probes
from ..core.canary import Counters
from ..core.crash_loop import RepairRecords
from ..core.ports import Probe


def _late_probe(url: str, timeout: float) -> str | None:
    return probes.http_probe(url, timeout)  # looked up now: tests replace it


@dataclass
class Hooks:
    """The proxy and the clock, injectable so unit tests run without either.

    ``confirm(generation)`` waits until the running proxy serves a pool generation (None: no
    proxy answers); ``drained(urls, timeout)`` waits until nothing is in flight to ``urls``
    through it and returns what is left (None: no proxy)."""

    confirm: Callable[[str], bool | None] | None = None
    drained: Callable[[Collection[str], float], int | None] | None = None
    # Why this pass should yield now (an edit waits for the lock, the file changed), or None:
    # checked while a rollout waits, so one slow backend never queues an emergency change.
    preempted: Callable[[], str | None] | None = None
    # Looked up when called, so that tests can replace http_probe.
    probe: Probe = field(default_factory=lambda: _late_probe)
    parallel: bool = True  # backends roll out side by side
    # The proxy's cumulative counters summed over instance URLs (a canary's judge); None
    # when no proxy answers.
    counters: Callable[[Collection[str]], Counters | None] | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    # The wall clock, for what outlives the process (a crash loop's restarts, engine/repairs.py).
    wall: Callable[[], float] = time.time
    # What the pass repaired and restarted (engine/repairs.py); None: not tracked.
    records: RepairRecords | None = None


class Preempted(Exception):
    """A newer change waits: the pass ends early, and the next one carries on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
