"""PURE. The values of the certificate rules (:mod:`.certs`): a certificate held, what is
remembered of a name between attempts, the renewal policy, and what a plan of certificates
says (names wanted and refused, names due).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from ...proxy.tls import covers

__all__ = [
    "CHALLENGES",
    "CertPlan",
    "Challenge",
    "Due",
    "HeldCertificate",
    "NameRecord",
    "Refusal",
    "RenewalPolicy",
    "Wanted",
]

Challenge = Literal["http-01", "tls-alpn-01"]
CHALLENGES: tuple[Challenge, ...] = ("http-01", "tls-alpn-01")


@dataclass(frozen=True, slots=True)
class HeldCertificate:
    """A certificate lbrec obtained and stores under ``.lbrec/certs/<name>/`` (paths relative
    to the deploy folder); the facts of its leaf, never its key."""

    name: str
    cert: str
    key: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str
    serial: str

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before

    def covers(self, host: str) -> bool:
        return any(covers(name, host) for name in self.names)


@dataclass(frozen=True, slots=True)
class NameRecord:
    """What the manager remembers of one name between attempts (``schedule.json``)."""

    failures: int = 0  # consecutive failed orders
    last_error: str | None = None  # the CA's own words, or why it could not be reached
    last_attempt: dt.datetime | None = None
    retry_at: dt.datetime | None = None  # no order before this (back-off, Retry-After)
    failed_challenge: Challenge | None = None  # the challenge of the last failed validation
    ari_serial: str | None = None  # the certificate the ARI window below is about
    ari_start: dt.datetime | None = None
    ari_end: dt.datetime | None = None
    ari_next: dt.datetime | None = None  # when to ask the CA again
    issued_by: str | None = None  # the ACME directory of the current certificate


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    fraction: float = 2 / 3  # of the lifetime: renew then
    jitter: float = 0.05  # of the lifetime: up to this much earlier
    first_backoff: float = 300.0  # seconds after the first failure
    max_backoff: float = 6 * 3600.0
    ari_interval: float = 6 * 3600.0  # ask the CA's renewal info again (without Retry-After)


@dataclass(frozen=True, slots=True)
class Refusal:
    route: int
    host: str
    message: str


@dataclass(frozen=True, slots=True)
class Wanted:
    names: tuple[str, ...]
    refused: tuple[Refusal, ...] = ()


@dataclass(frozen=True, slots=True)
class Due:
    name: str
    kind: Literal["issue", "renew"]
    why: str


@dataclass(frozen=True, slots=True)
class CertPlan:
    due: tuple[Due, ...]
    next_at: dt.datetime | None  # the earliest time something else becomes due
