"""The executor's outside world, injectable: the proxy, the probe, the clock.

The composition root (``runtime/passes.py``) builds the real ones; unit tests build stand-ins
(tests/reconciler/fakes.py). Their types are the ports of ``core/ports.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.ports import Confirm, CountersOf, Drained, Preemption, Probe, RepairRecords


def _no_probe(url: str, timeout: float) -> str | None:
    del timeout
    return f"no health probe was given to this pass (GET {url} not sent)"


@dataclass
class Hooks:
    """The proxy and the clock, injectable so unit tests run without either.

    ``confirm(generation)`` waits until the running proxy serves a pool generation (None: no
    proxy answers); ``drained(urls, timeout)`` waits until nothing is in flight to ``urls``
    through it and returns what is left (None: no proxy)."""

    confirm: Confirm | None = None
    drained: Drained | None = None
    # Why this pass should yield now (an edit waits for the lock, the file changed), or None:
    # checked while a rollout waits, so one slow backend never queues an emergency change.
    preempted: Preemption | None = None
    # The health probe of a new instance (runtime/passes.py gives adapters.probes.http_probe).
    probe: Probe = _no_probe
    parallel: bool = True  # backends roll out side by side
    # The proxy's cumulative counters summed over instance URLs (a canary's judge); None
    # when no proxy answers.
    counters: CountersOf | None = None
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
