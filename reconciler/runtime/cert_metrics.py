"""EDGE. The certificate manager's figures on the reconciler's /metrics: orders by outcome,
and per name its expiry, next renewal and consecutive failures (never a key or a path).
"""

from __future__ import annotations

import datetime as dt
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..core.certs import HeldCertificate, NameRecord, RenewalPolicy, renewal_time

__all__ = ["CERT_METRICS", "CertMetrics", "utc_now"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertMetrics:
    """The manager's figures on the reconciler's /metrics (never a key or a path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.orders = Counter(
            "lbrec_acme_orders",
            "ACME orders by outcome: issued (a new name), renewed, failed",
            ["outcome"],
            registry=registry,
        )
        self.expiry = Gauge(
            "lbrec_certificate_expiry_timestamp_seconds",
            "When each obtained certificate expires (notAfter, Unix time), by name",
            ["name"],
            registry=registry,
        )
        self.next_renewal = Gauge(
            "lbrec_certificate_next_renewal_timestamp_seconds",
            "When each name is next ordered (renewal time, or the end of its back-off)",
            ["name"],
            registry=registry,
        )
        self.failures = Gauge(
            "lbrec_certificate_failures",
            "Consecutive failed orders of each name (0: its last order succeeded)",
            ["name"],
            registry=registry,
        )
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def show(
        self,
        names: tuple[str, ...],
        held: dict[str, HeldCertificate],
        records: dict[str, NameRecord],
        policy: RenewalPolicy,
    ) -> None:
        with self._lock:
            for gone in self._names - set(names):
                for gauge in (self.expiry, self.next_renewal, self.failures):
                    try:
                        gauge.remove(gone)
                    except KeyError:
                        continue
            self._names = set(names)
            for name in names:
                record = records.get(name) or NameRecord()
                cert = held.get(name)
                if cert is not None:
                    self.expiry.labels(name).set(cert.not_after.timestamp())
                    at = renewal_time(cert, record, policy)
                else:
                    at = record.retry_at or utc_now()
                if record.retry_at is not None and record.retry_at > at:
                    at = record.retry_at
                self.next_renewal.labels(name).set(at.timestamp())
                self.failures.labels(name).set(record.failures)


def _registry() -> CollectorRegistry:
    from .metrics import LOOP_METRICS

    return LOOP_METRICS.registry


CERT_METRICS = CertMetrics(_registry())
