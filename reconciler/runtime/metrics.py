"""EDGE. The reconciler's own metrics (prometheus-client), for `lbrec up`, `watch` and `sync`.

One :class:`LoopMetrics` per process (:data:`LOOP_METRICS`), fed by the control loop after
every pass: passes by outcome, pass duration, drift repaired (a pass that changed something
though the desired state had not: it ran for a `docker events` notice or a resync), the last
successful pass, and the revision deployed (read from ``.lbrec/deployed.json`` at scrape
time, so it is what `lbrec status` says). `lbrec up` serves them on the proxy's admin
listener beside the proxy's own; `watch` and `sync` with ``--metrics HOST:PORT``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from ..adapters.records import read_deployed

__all__ = ["LOOP_METRICS", "OUTCOMES", "LoopMetrics", "serve_metrics"]

# in_sync: nothing to do; changed: deployed a change of the desired state; repaired: brought
# back what had converged (drift); deferred: left a change alone (a held version, a crash
# loop's back-off or hold); preempted: cut short by a newer change; failed: will be retried;
# invalid: the desired state was refused (waits for a new one)
OUTCOMES = ("in_sync", "changed", "repaired", "deferred", "preempted", "failed", "invalid")
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _is_drift(reason: str) -> bool:
    return reason == "resync" or reason.startswith("docker ")


class _Deployed(Collector):
    def __init__(self, owner: LoopMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        with self._owner.lock:
            folders = dict(self._owner.folders)
            generations = dict(self._owner.generations)
        info = InfoMetricFamily(
            "lbrec_reconciler_deployed",
            "The revision last deployed (GitOps sync) and the pool generation of the last pass",
            labels=["loop"],
        )
        for loop, folder in folders.items():
            record = read_deployed(folder) or {}
            info.add_metric(
                [loop],
                {
                    "commit": str(record.get("commit") or ""),
                    "generation": generations.get(loop, ""),
                },
            )
        yield info
        yield GaugeMetricFamily(
            "lbrec_reconciler_loops", "Control loops running in this process", value=len(folders)
        )


class LoopMetrics:
    """The counters of every control loop of this process, labelled by loop name."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.lock = threading.Lock()
        self.folders: dict[str, Path] = {}
        self.generations: dict[str, str] = {}
        self.passes = Counter(
            "lbrec_reconciler_passes",
            "Reconcile passes by outcome (in_sync, changed, repaired, deferred, preempted, "
            "failed, invalid)",
            ["loop", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lbrec_reconciler_pass_duration_seconds",
            "Time a pass took (lock, observe, plan, apply, converge)",
            ["loop"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.drift = Counter(
            "lbrec_reconciler_drift_repaired",
            "Passes that changed something for a docker event or a resync (no new desired state)",
            ["loop"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "lbrec_reconciler_last_success_timestamp_seconds",
            "When a pass last ended without a failure",
            ["loop"],
            registry=self.registry,
        )
        self.refused = Counter(
            "lbrec_sync_commits_refused",
            "Commits the operator's policy refused, by the policy rule they broke",
            ["loop", "rule"],
            registry=self.registry,
        )
        self.proxy_restarts = Counter(
            "lbrec_up_proxy_restarts",
            "Proxy processes of `lbrec up` started again after they exited unasked (a crash)",
            ["worker"],
            registry=self.registry,
        )
        self.registry.register(_Deployed(self))

    def follow(self, loop: str, folder: Path) -> None:
        """A loop named ``loop`` runs for the deploy folder ``folder``: its series exist
        from now on (at zero), so a dashboard shows them before the first pass ends."""
        with self.lock:
            self.folders[loop] = folder
        for outcome in OUTCOMES:
            self.passes.labels(loop, outcome)
        self.duration.labels(loop)
        self.drift.labels(loop)
        self.last_success.labels(loop)

    def record(
        self,
        loop: str,
        *,
        reason: str,
        outcome: str,
        seconds: float,
        generation: str = "",
        at: float,
    ) -> None:
        """One pass ended (``outcome`` one of :data:`OUTCOMES`)."""
        self.passes.labels(loop, outcome).inc()
        self.duration.labels(loop).observe(seconds)
        if outcome == "repaired" or (outcome == "changed" and _is_drift(reason)):
            self.drift.labels(loop).inc()
        if outcome in ("in_sync", "changed", "repaired", "deferred"):
            self.last_success.labels(loop).set(at)
            if generation:
                with self.lock:
                    self.generations[loop] = generation


LOOP_METRICS = LoopMetrics()


def serve_metrics(
    address: tuple[str, int] | None, log: logging.Logger, registry: Collector | None = None
) -> bool:
    """``--metrics``: ``/metrics`` on ``address`` in a daemon thread (nothing without one).
    False, logged, when the address cannot be bound: the command then exits 2 before it
    touches anything."""
    if address is None:
        return True
    host, port = address
    try:
        server, _thread = start_http_server(
            port, addr=host, registry=registry or LOOP_METRICS.registry
        )
    except OSError as err:
        log.error("--metrics %s:%d: cannot listen: %s", host, port, err.strerror or err)
        return False
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    log.info(
        "metrics on http://%s:%d/metrics",
        bound_host,
        bound_port,
        extra={"event": "metrics_listening", "address": f"{bound_host}:{bound_port}"},
    )
    return True
