"""EDGE. One ACME order, start to end: under the folder's order lock, the certificate stored
and its record written on success, the failure recorded and backed off otherwise, each logged
with the CA's own words. The certificate manager's tick and ``lbrec certs --renew`` both run it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from ..adapters.acme import AcmeClient, AcmeFailure, order_lock
from ..adapters.cert_store import read_records, store_certificate, write_record
from ..adapters.workspace import Workspace
from ..core.certs import (
    Due,
    HeldCertificate,
    NameRecord,
    RenewalPolicy,
    after_failure,
    after_success,
)
from ..core.spec import DesiredState
from .cert_metrics import CertMetrics

__all__ = ["obtain_now"]

_log = logging.getLogger("lbrec.certs")


def obtain_now(
    workspace: Workspace,
    desired: DesiredState,
    due: Due,
    client: AcmeClient,
    *,
    now: dt.datetime,
    policy: RenewalPolicy,
    lock_timeout: float,
    metrics: CertMetrics | None = None,
    held: HeldCertificate | None = None,
) -> tuple[HeldCertificate | None, NameRecord]:
    """One order for ``due.name``: stored and recorded on success (the new certificate), the
    failure recorded otherwise (None); never raises an AcmeFailure. Also `lbrec certs --renew`."""
    assert desired.tls is not None and desired.tls.acme is not None
    folder = workspace.folder
    name = due.name
    record = read_records(folder).get(name) or NameRecord()
    started = time.monotonic()
    try:
        with order_lock(folder, timeout=lock_timeout):
            obtained = client.obtain(
                name,
                mode=desired.tls.acme.challenge,
                listen=desired.listen,
                tls_listen=desired.tls.listen,
                record=record,
            )
            new = store_certificate(folder, name, obtained.chain_pem, obtained.key_pem)
            record = after_success(record, now, desired.tls.acme.directory)
            write_record(folder, name, record)
    except (AcmeFailure, OSError, ValueError) as err:
        message = err.message if isinstance(err, AcmeFailure) else f"{type(err).__name__}: {err}"
        record = after_failure(
            record,
            now,
            message,
            policy=policy,
            retry_after=err.retry_after if isinstance(err, AcmeFailure) else None,
            challenge=err.challenge if isinstance(err, AcmeFailure) else None,
        )
        try:
            write_record(folder, name, record)
        except OSError as write_error:
            _log.error("certificates: cannot record %s: %s", name, write_error)
        if metrics is not None:
            metrics.orders.labels("failed").inc()
        wait = (record.retry_at - now).total_seconds() if record.retry_at else 0.0
        serving = (
            f"the certificate valid until {held.not_after.isoformat()} keeps serving"
            if held is not None
            else "no certificate yet: the name has none to serve"
        )
        _log.error(
            "certificate %s: %s failed (attempt %d): %s; next try in %s; %s",
            name,
            "order" if due.kind == "issue" else "renewal",
            record.failures,
            message,
            _human(wait),
            serving,
            extra={
                "event": "certificate_failed",
                "host": name,
                "kind": due.kind,
                "error": message,
                "failures": record.failures,
                "retry_in_s": round(wait, 1),
            },
        )
        return None, record
    seconds = time.monotonic() - started
    if metrics is not None:
        metrics.orders.labels("issued" if due.kind == "issue" else "renewed").inc()
    _log.info(
        "certificate %s: %s by %s over %s in %.1fs, valid until %s (%s)",
        name,
        "issued" if due.kind == "issue" else "renewed",
        new.issuer,
        obtained.challenge or "a valid authorization",
        seconds,
        new.not_after.isoformat(),
        due.why,
        extra={
            "event": "certificate_issued",
            "host": name,
            "kind": due.kind,
            "issuer": new.issuer,
            "not_after": new.not_after.isoformat(),
            "challenge": obtained.challenge,
            "duration_s": round(seconds, 3),
        },
    )
    return new, record


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
