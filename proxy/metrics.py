"""``/metrics``: what the proxy counts, as Prometheus text (prometheus-client), for every worker.

Counters live as plain ints on the backends and the server (no cost on the request path);
:func:`figures` reads them into a plain, JSON-able document and :class:`ProxyCollector` turns
documents into metric families at scrape time.

``--workers N``: each worker process has its own counters. Every worker but the admin one
writes its document every :data:`PUBLISH_S` seconds (atomically: temp file, rename) into a
folder the supervisor made (:class:`FiguresPublisher`); the admin worker reads them at scrape
time (:func:`peer_figures`) and exports each worker's counters under its own ``worker`` label,
so ``rate()`` handles a restarted worker's reset and ``sum by (backend)`` covers them all. A
document older than :data:`STALE_S` (a worker that died) is left out. Gauges of the pool
itself (weight, state, version split) are the admin worker's: every worker reads one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .http2 import REFUSALS as HTTP2_REFUSALS
from .route_metrics import route_families
from .server import ProxyServer
from .stats import LATENCY_BOUNDS, STATUS_CLASSES

__all__ = [
    "PUBLISH_S",
    "STALE_S",
    "FiguresPublisher",
    "ProxyCollector",
    "figures",
    "peer_figures",
]

PUBLISH_S = 1.0
STALE_S = 10.0
_STATES = ("up", "down", "checking", "ejected", "draining")
_LE = [*(f"{bound:g}" for bound in LATENCY_BOUNDS), "+Inf"]


def figures(server: ProxyServer, *, worker: int = 0) -> dict[str, Any]:
    """This process's counters, as a JSON-able document (one per worker)."""
    answers = server.answers
    backends = []
    for b in server.shown():
        status, latency = b.stats.totals()
        backends.append(
            {
                "backend": b.name,
                "container": b.instance or b.key,
                "requests": b.requests,
                "errors": b.errors,
                "inflight": b.inflight,
                "connections": b.conns.opened,
                "status": status,
                "latency": latency,
                "latency_sum": b.stats.latency_sum,
            }
        )
    return {
        "worker": worker,
        "at": time.time(),
        "backends": backends,
        "answers": {
            "status": list(answers.status),
            "latency": list(answers.latency),
            "latency_sum": answers.latency_sum,
            # a refused connection is a 503 too: counted once, as refused_connections
            "no_backend": {
                **answers.no_backend,
                "too_many_connections": server.refused_connections,
            },
        },
        "client_connections": len(server.connections),
        "refused_connections": server.refused_connections,
        "reloads": server.reloads,
        "reload_errors": server.reload_errors,
        "ejections": server.ejections,
        "http2_refusals": dict(HTTP2_REFUSALS),
        "routes": server.route_figures.doc(),
    }


def _buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative ``le`` buckets from per-bucket counts (``LATENCY_BOUNDS`` + overflow)."""
    out = []
    running = 0
    for le, count in zip(_LE, counts, strict=True):
        running += count
        out.append((le, float(running)))
    return out


def _figures_file(folder: Path, worker: int) -> Path:
    return folder / f"worker-{worker}.json"


def peer_figures(
    folder: Path | None, *, own: int = 0, now: float | None = None
) -> list[dict[str, Any]]:
    """The documents the other workers published (fresh ones only)."""
    if folder is None:
        return []
    now = time.time() if now is None else now
    docs = []
    for path in sorted(folder.glob("worker-*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a worker that never wrote, or a file being replaced under an old reader
        if not isinstance(doc, dict) or doc.get("worker") == own:
            continue
        if now - float(doc.get("at", 0)) > STALE_S:
            continue
        docs.append(doc)
    return docs


class FiguresPublisher:
    """A worker's side of ``--workers N``: its document into ``folder`` every second."""

    def __init__(self, server: ProxyServer, folder: Path, worker: int) -> None:
        self._server = server
        self._path = _figures_file(folder, worker)
        self._worker = worker
        self._task: asyncio.Task[None] | None = None

    def write(self) -> None:
        temp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(figures(self._server, worker=self._worker)))
        os.replace(temp, self._path)  # tmpfs-like scratch: no fsync, a torn file is skipped

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.write()
            await asyncio.sleep(PUBLISH_S)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="figures-publisher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(OSError):
            self.write()  # the last figures, for the scrape that follows a graceful stop


class ProxyCollector(Collector):
    """Every metric of the proxy; ``peers`` returns the other workers' documents."""

    def __init__(
        self,
        server: ProxyServer,
        *,
        worker: int = 0,
        peers: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self._server = server
        self._worker = worker
        self._peers = peers

    def collect(self) -> Iterator[Metric]:
        server = self._server
        docs = [figures(server, worker=self._worker), *self._peers()]
        yield from self._pool_gauges()
        yield from self._per_worker(docs)
        yield from route_families(docs)
        yield from self._process_info()

    def _pool_gauges(self) -> Iterator[Metric]:
        """The pool as the admin worker holds it: one series per instance. `container` is
        the container name when known, else the pool key (name or name@host:port); not
        `instance`, which Prometheus sets on every scraped target itself."""
        labels = ["backend", "container"]
        weight = GaugeMetricFamily("lbrec_proxy_backend_weight", "Weight", labels=labels)
        state = GaugeMetricFamily(
            "lbrec_proxy_backend_state", "1 for the backend's state", labels=[*labels, "state"]
        )
        split = GaugeMetricFamily(
            "lbrec_proxy_backend_version_percent",
            "A canary: this instance's version's share of its backend's traffic, in %",
            labels=[*labels, "version"],
        )
        for b in self._server.pool.backends.values():
            ident = [b.name, b.instance or b.key]
            weight.add_metric(ident, b.weight)
            for name in _STATES:
                state.add_metric([*ident, name], 1.0 if b.state == name else 0.0)
            if b.percent is not None:
                split.add_metric([*ident, b.version or ""], b.percent)
        yield from (weight, state, split)

    def _per_worker(self, docs: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["backend", "container", "worker"]
        requests = CounterMetricFamily(
            "lbrec_proxy_backend_requests", "Requests sent to a backend", labels=labels
        )
        errors = CounterMetricFamily(
            "lbrec_proxy_backend_errors",
            "Failed attempts (connect errors, timeouts, broken or 5xx answers)",
            labels=labels,
        )
        inflight = GaugeMetricFamily(
            "lbrec_proxy_backend_inflight", "Requests in flight", labels=labels
        )
        conns = GaugeMetricFamily(
            "lbrec_proxy_backend_connections", "Open backend connections", labels=labels
        )
        responses = CounterMetricFamily(
            "lbrec_proxy_backend_responses",
            "Answers received from a backend, by status class",
            labels=[*labels, "code"],
        )
        latency = HistogramMetricFamily(
            "lbrec_proxy_backend_response_seconds",
            "Time from sending a request to a backend to its answer's first byte",
            labels=labels,
        )
        answers = CounterMetricFamily(
            "lbrec_proxy_responses",
            "Answers the listener sent to clients, by status class (499: client went away)",
            labels=["code", "worker"],
        )
        duration = HistogramMetricFamily(
            "lbrec_proxy_request_duration_seconds",
            "Time from a request's head to the end of its answer, as the listener saw it",
            labels=["worker"],
        )
        unavailable = CounterMetricFamily(
            "lbrec_proxy_no_backend",
            "Requests answered 503 for lack of a backend, by reason",
            labels=["reason", "worker"],
        )
        clients = GaugeMetricFamily(
            "lbrec_proxy_client_connections", "Open client connections", labels=["worker"]
        )
        refused = CounterMetricFamily(
            "lbrec_proxy_refused_connections",
            "Client connections refused (limits.max_connections)",
            labels=["worker"],
        )
        reloads = CounterMetricFamily("lbrec_proxy_reloads", "Pools swapped in", labels=["worker"])
        reload_errors = CounterMetricFamily(
            "lbrec_proxy_reload_errors", "Rejected config files", labels=["worker"]
        )
        ejections = CounterMetricFamily(
            "lbrec_proxy_ejections", "Passive ejections", labels=["worker"]
        )
        http2 = CounterMetricFamily(
            "lbrec_proxy_http2_refusals",
            "HTTP/2 streams and connections refused, by reason (floods, protocol errors, "
            "malformed requests, answered statuses)",
            labels=["reason", "worker"],
        )
        for doc in docs:
            worker = str(doc["worker"])
            for b in doc["backends"]:
                ident = [b["backend"], b["container"], worker]
                requests.add_metric(ident, b["requests"])
                errors.add_metric(ident, b["errors"])
                inflight.add_metric(ident, b["inflight"])
                conns.add_metric(ident, b["connections"])
                for klass, count in zip(STATUS_CLASSES, b["status"], strict=True):
                    responses.add_metric([*ident, klass], count)
                latency.add_metric(ident, _buckets(b["latency"]), b["latency_sum"])
            a = doc["answers"]
            for klass, count in zip(STATUS_CLASSES, a["status"], strict=True):
                answers.add_metric([klass, worker], count)
            duration.add_metric([worker], _buckets(a["latency"]), a["latency_sum"])
            for reason in ("no_backends_configured", "no_healthy_backend", "too_many_connections"):
                unavailable.add_metric([reason, worker], a["no_backend"].get(reason, 0))
            clients.add_metric([worker], doc["client_connections"])
            refused.add_metric([worker], doc["refused_connections"])
            reloads.add_metric([worker], doc["reloads"])
            reload_errors.add_metric([worker], doc["reload_errors"])
            ejections.add_metric([worker], doc["ejections"])
            for reason, count in doc.get("http2_refusals", {}).items():
                http2.add_metric([reason, worker], count)
        yield from (requests, errors, inflight, conns, responses, latency)
        yield from (answers, duration, unavailable, clients, refused)
        yield from (reloads, reload_errors, ejections, http2)
        yield GaugeMetricFamily(
            "lbrec_proxy_workers",
            "Worker processes whose figures this scrape holds",
            value=len(docs),
        )

    def _process_info(self) -> Iterator[Metric]:
        server = self._server
        pool = server.pool
        revision = pool.config.revision
        info = InfoMetricFamily("lbrec_build", "The proxy's version and the pool it serves")
        info.add_metric(
            [],
            {
                "version": server.runtime["lbrec"],
                "event_loop": server.runtime["event_loop"],
                "generation": pool.config.generation,
                "revision": (revision.commit or "") if revision is not None else "",
            },
        )
        yield info
        yield GaugeMetricFamily(
            "lbrec_proxy_last_reload_timestamp_seconds",
            "When a config file was last read with a change (swapped in or rejected)",
            value=server.last_reload_attempt_at,
        )
        yield GaugeMetricFamily(
            "lbrec_proxy_last_reload_success",
            "1 when the last config file read was swapped in, 0 when it was rejected",
            value=0.0 if server.last_reload_error else 1.0,
        )
        yield GaugeMetricFamily(
            "lbrec_proxy_start_time_seconds", "When the proxy started", value=server.started_at
        )
