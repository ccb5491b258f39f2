"""PURE. Automatic certificates (ACME, RFC 8555): which names need a certificate, which
challenge to answer, and when each name is next due.

Nothing here reads a file, a clock or the network: the certificate manager
(runtime/certs.py) passes ``now``, the certificates it holds (:class:`HeldCertificate`, read
from ``.lbrec/certs`` by adapters/cert_store.py) and what it remembers of each name
(:class:`NameRecord`), and does what :func:`plan_certificates` says. Those values are
:mod:`.cert_values`'s (re-exported here).

The rules:

* **Which names.** Every host of ``routes:`` whose ``tls`` is not ``off``, without its port,
  that no certificate of ``tls.certificates`` covers. ACME orders exact names only: a wildcard
  needs DNS-01, which lbrec does not do, so a ``*.`` host that no operator certificate covers
  is *refused* (named, with its route) and never ordered. One certificate per name (as Caddy
  does): a failing name never holds another back, and a renewal touches one site.
* **When.** A certificate is renewed at two thirds of its lifetime, a little earlier by a
  jitter of up to ``policy.jitter`` of its lifetime (the same for one certificate at every
  restart: a hash of its name and serial, so a fleet started together does not renew together),
  or earlier still when the CA's ACME Renewal Information (ARI) window says so (a point in the
  window, by the same jitter).
* **After a failure.** The name waits ``first_backoff`` doubled by each consecutive failure up
  to ``max_backoff`` (Let's Encrypt allows 5 failed validations per name per hour: the first
  back-off of 5 minutes keeps a failing name under that), never less than the CA's
  ``Retry-After``. The serving certificate is never touched by a failure.
* **Which challenge.** ``http-01`` or ``tls-alpn-01`` when the operator picks one; ``auto``
  prefers HTTP-01, uses TLS-ALPN-01 when the plain listener cannot be reached from outside
  (loopback only) while the TLS listener can, and alternates after a failed validation, so
  that a host whose port 80 is closed still gets its certificate on the next attempt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Literal

from ...proxy.config import split_hostport
from ...proxy.tls import covers
from .cert_values import (
    CHALLENGES,
    CertPlan,
    Challenge,
    Due,
    HeldCertificate,
    NameRecord,
    Refusal,
    RenewalPolicy,
    Wanted,
)
from .spec import DesiredState

# The rules, and the values of cert_values.py that others import from here
__all__ = [
    "CHALLENGES",
    "Challenge",
    "Due",
    "HeldCertificate",
    "NameRecord",
    "RenewalPolicy",
    "Wanted",
    "after_failure",
    "after_success",
    "ari_due",
    "backoff_delay",
    "certificate_rows",
    "choose_challenge",
    "jitter_fraction",
    "plan_certificates",
    "renewal_time",
    "served_names",
    "wanted_names",
    "with_ari",
]


def _host_name(host: str) -> str:
    return host.rsplit(":", 1)[0] if ":" in host else host


def served_names(desired: DesiredState) -> tuple[str, ...]:
    """Every host name a route serves over TLS (its ``tls`` is not ``off``), without ports,
    wildcards included, in order of first appearance."""
    out: dict[str, None] = {}
    for route in desired.routes:
        if route.host is not None and route.tls != "off":
            out.setdefault(_host_name(route.host), None)
    return tuple(out)


def wanted_names(desired: DesiredState, operator_names: Collection[str] = ()) -> Wanted:
    """The names ACME must obtain: see the module's docstring. ``operator_names``: the names
    (subjectAltName entries, ``*.`` wildcards included) of the certificates of
    ``tls.certificates`` that could be read."""
    if desired.tls is None or desired.tls.acme is None:
        return Wanted(())
    names: dict[str, None] = {}
    refused: list[Refusal] = []
    for index, route in enumerate(desired.routes):
        if route.host is None or route.tls == "off":
            continue
        host = _host_name(route.host)
        if any(covers(name, host) for name in operator_names):
            continue
        if host.startswith("*."):
            if not any(r.host == host for r in refused):
                refused.append(
                    Refusal(
                        index,
                        host,
                        f"routes[{index}].host: {host!r}: ACME cannot issue a wildcard "
                        "certificate over HTTP-01 or TLS-ALPN-01 (it needs DNS-01): add a "
                        "certificate covering it to tls.certificates",
                    )
                )
            continue
        names.setdefault(host, None)
    return Wanted(tuple(names), tuple(refused))


def jitter_fraction(name: str, serial: str) -> float:
    """A number in [0, 1), the same for one certificate (name and serial) every time."""
    digest = hashlib.sha256(f"{name}\0{serial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renewal_time(
    held: HeldCertificate, record: NameRecord | None = None, policy: RenewalPolicy | None = None
) -> dt.datetime:
    """When ``held`` is renewed: at ``policy.fraction`` of its lifetime less the jitter, or at
    the jittered point of the CA's ARI window for this certificate when that is earlier."""
    policy = policy or RenewalPolicy()
    share = jitter_fraction(held.name, held.serial)
    lifetime = held.lifetime
    own = held.not_before + lifetime * (policy.fraction - policy.jitter * share)
    if (
        record is not None
        and record.ari_serial == held.serial
        and record.ari_start is not None
        and record.ari_end is not None
        and record.ari_end >= record.ari_start
    ):
        ari = record.ari_start + (record.ari_end - record.ari_start) * share
        return min(own, ari)
    return own


def backoff_delay(
    failures: int, policy: RenewalPolicy | None = None, *, retry_after: float | None = None
) -> float:
    """Seconds a name waits after its ``failures``-th consecutive failure: exponential from
    ``first_backoff``, capped at ``max_backoff``, and never shorter than the CA's
    ``Retry-After``."""
    policy = policy or RenewalPolicy()
    if failures <= 0:
        return max(0.0, retry_after or 0.0)
    exponent = min(failures - 1, 62)
    delay = min(policy.max_backoff, policy.first_backoff * 2.0**exponent)
    return max(delay, retry_after or 0.0)


def after_failure(
    record: NameRecord,
    now: dt.datetime,
    error: str,
    *,
    policy: RenewalPolicy | None = None,
    retry_after: float | None = None,
    challenge: Challenge | None = None,
) -> NameRecord:
    """The record after a failed order; ``challenge``: the challenge whose validation failed
    (``auto`` tries the other one next)."""
    failures = record.failures + 1
    delay = backoff_delay(failures, policy, retry_after=retry_after)
    return replace(
        record,
        failures=failures,
        last_error=error,
        last_attempt=now,
        retry_at=now + dt.timedelta(seconds=delay),
        failed_challenge=challenge if challenge is not None else record.failed_challenge,
    )


def after_success(record: NameRecord, now: dt.datetime, directory: str | None = None) -> NameRecord:
    """A new certificate (from the CA at ``directory``): the failures are forgotten, and so
    is the old one's ARI window."""
    del record
    return NameRecord(last_attempt=now, issued_by=directory)


def with_ari(
    record: NameRecord,
    serial: str,
    window: tuple[dt.datetime, dt.datetime] | None,
    now: dt.datetime,
    *,
    retry_after: float | None = None,
    policy: RenewalPolicy | None = None,
) -> NameRecord:
    """The record once the CA was asked for its renewal window of ``serial`` (None: it has
    none, or could not say): asked again after Retry-After or ``ari_interval``."""
    policy = policy or RenewalPolicy()
    again = now + dt.timedelta(seconds=retry_after if retry_after else policy.ari_interval)
    start, end = window if window is not None else (None, None)
    return replace(record, ari_serial=serial, ari_start=start, ari_end=end, ari_next=again)


def ari_due(held: HeldCertificate, record: NameRecord | None, now: dt.datetime) -> bool:
    """Whether the CA's renewal info for ``held`` should be fetched now (never for an expired
    certificate: draft-ietf-acme-ari says clients must not)."""
    if held.not_after <= now:
        return False
    if record is None or record.ari_serial != held.serial or record.ari_next is None:
        return True
    return now >= record.ari_next


def plan_certificates(
    now: dt.datetime,
    wanted: Iterable[str],
    held: Mapping[str, HeldCertificate],
    records: Mapping[str, NameRecord],
    policy: RenewalPolicy | None = None,
    *,
    directory: str | None = None,
) -> CertPlan:
    """Which names are due now (``issue``: none held; ``renew``: the renewal time has come,
    it expired, it no longer covers its name, or another ACME ``directory`` issued it: from
    Let's Encrypt's staging to production at once), and when the next one is. A name in
    back-off is never due before its ``retry_at``."""
    policy = policy or RenewalPolicy()
    due: list[Due] = []
    upcoming: list[dt.datetime] = []
    for name in wanted:
        cert = held.get(name)
        record = records.get(name) or NameRecord()
        if cert is None or not cert.covers(name):
            kind: Literal["issue", "renew"] = "issue" if cert is None else "renew"
            at, why = now, "no certificate yet" if cert is None else "it does not cover the name"
        elif directory and record.issued_by and record.issued_by != directory:
            kind, at, why = "renew", now, "another ACME directory issued it"
        else:
            kind = "renew"
            at = renewal_time(cert, record, policy)
            why = (
                "expired"
                if cert.not_after <= now
                else "the CA's renewal window"
                if at < renewal_time(cert, None, policy)
                else "two thirds of its lifetime"
            )
        if record.retry_at is not None and record.retry_at > at:
            at = record.retry_at
        if at <= now:
            due.append(Due(name, kind, why))
        else:
            upcoming.append(at)
    return CertPlan(tuple(due), min(upcoming) if upcoming else None)


def _loopback(hostport: str) -> bool:
    host = split_hostport(hostport)[0]
    return host == "localhost" or host.startswith("127.") or host == "::1"


def choose_challenge(
    mode: Literal["auto", "http-01", "tls-alpn-01"],
    offered: Collection[str],
    *,
    listen: str,
    tls_listen: str,
    record: NameRecord | None = None,
) -> Challenge | None:
    """The challenge to answer among those the CA ``offered`` (None: none lbrec can).

    ``auto``: HTTP-01 first, unless the plain listener is loopback only while the TLS
    listener is not (the CA cannot reach port 80 then); after a failed validation, the other
    one (a host whose port 80 is closed gets its certificate over TLS-ALPN-01)."""
    if mode != "auto":
        return mode if mode in offered else None
    order: list[Challenge] = list(CHALLENGES)
    if _loopback(listen) and not _loopback(tls_listen):
        order.reverse()
    if record is not None and record.failures and record.failed_challenge in order:
        order.remove(record.failed_challenge)
        order.append(record.failed_challenge)
    return next((c for c in order if c in offered), None)


def certificate_rows(
    now: dt.datetime,
    wanted: Wanted,
    held: Mapping[str, HeldCertificate],
    records: Mapping[str, NameRecord],
    policy: RenewalPolicy | None = None,
) -> list[dict[str, object]]:
    """For `lbrec status`, `lbrec certs` and their ``-o json``: names, issuer, expiry, next
    renewal, last error; never a key, a path to one, or the account."""
    rows: list[dict[str, object]] = []
    for name in wanted.names:
        cert = held.get(name)
        record = records.get(name) or NameRecord()
        plan = plan_certificates(now, [name], {name: cert} if cert else {}, {name: record}, policy)
        if plan.due:
            next_at: dt.datetime | None = now
        else:
            next_at = plan.next_at
        if cert is None:
            state = "failing" if record.failures else "pending"
        elif cert.not_after <= now:
            state = "expired"
        else:
            state = "failing" if record.failures else "valid"
        rows.append(
            {
                "name": name,
                "state": state,
                "names": list(cert.names) if cert else [name],
                "issuer": cert.issuer if cert else None,
                "not_after": cert.not_after.isoformat() if cert else None,
                "serial": cert.serial if cert else None,
                "next_renewal": next_at.isoformat() if next_at else None,
                "failures": record.failures,
                "last_error": record.last_error,
                "retry_at": record.retry_at.isoformat() if record.retry_at else None,
            }
        )
    for refusal in wanted.refused:
        rows.append(
            {
                "name": refusal.host,
                "state": "refused",
                "names": [refusal.host],
                "issuer": None,
                "not_after": None,
                "serial": None,
                "next_renewal": None,
                "failures": 0,
                "last_error": refusal.message,
                "retry_at": None,
            }
        )
    return rows
