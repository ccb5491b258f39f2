"""The per-route metric families of ``/metrics`` (issues 22 and 23), from each worker's figures
document (proxy/metrics.py ``figures``: its ``routes``, proxy/route_stats.py).

``route`` is a route's key from the config (host + path), or ``*`` for the plain pool and
for requests no route took: an unknown host is never a series of its own, so the cardinality
is the config's routes, times the fixed reasons and classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

from .route_stats import AFFINITY_KINDS, REFUSALS
from .stats import STATUS_CLASSES

__all__ = ["route_families"]


def route_families(docs: list[dict[str, Any]]) -> Iterator[Metric]:
    """One family per figure, a series per (route, worker) and reason, class or kind."""
    requests = CounterMetricFamily(
        "lbrec_proxy_route_responses",
        "Answers to clients by route (host + path; * the plain pool or no route) and status class",
        labels=["route", "code", "worker"],
    )
    refused = CounterMetricFamily(
        "lbrec_proxy_route_refusals",
        "Requests refused before any backend, by route and reason "
        "(allow, basic, forward, ratelimit, concurrency, maintenance)",
        labels=["route", "reason", "worker"],
    )
    compressed = CounterMetricFamily(
        "lbrec_proxy_route_compressed", "Answers compressed, by route", labels=["route", "worker"]
    )
    compress_in = CounterMetricFamily(
        "lbrec_proxy_route_compress_in_bytes",
        "Bytes of compressed answers before compression",
        labels=["route", "worker"],
    )
    compress_out = CounterMetricFamily(
        "lbrec_proxy_route_compress_out_bytes",
        "Bytes of compressed answers after compression",
        labels=["route", "worker"],
    )
    affinity = CounterMetricFamily(
        "lbrec_proxy_route_affinity",
        "Affinity choices by route: new (no pin), kept, moved (the pinned instance left or failed)",
        labels=["route", "kind", "worker"],
    )
    for doc in docs:
        worker = str(doc["worker"])
        for route, figures in doc.get("routes", {}).items():
            for klass, count in zip(STATUS_CLASSES, figures["status"], strict=True):
                if count:
                    requests.add_metric([route, klass, worker], count)
            for reason in REFUSALS:
                refused.add_metric([route, reason, worker], figures["refused"].get(reason, 0))
            compressed.add_metric([route, worker], figures["compressed"])
            compress_in.add_metric([route, worker], figures["bytes_in"])
            compress_out.add_metric([route, worker], figures["bytes_out"])
            for kind in AFFINITY_KINDS:
                affinity.add_metric([route, kind, worker], figures["affinity"].get(kind, 0))
    yield from (requests, refused, compressed, compress_in, compress_out, affinity)
