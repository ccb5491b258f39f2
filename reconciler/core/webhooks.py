"""PURE. Judge a call to ``POST /-/sync``: who signed it, is it a replay, does it deploy.

Every forge signs its webhooks its own way; all of them are checked against the one shared secret
``LBREC_SYNC_TOKEN``, always with :func:`hmac.compare_digest`:

======================  =========================================================================
GitHub                  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``
Gitea, Forgejo          ``X-Gitea-Signature`` / ``X-Forgejo-Signature``: the same HMAC, bare hex
GitLab                  ``X-Gitlab-Token``: the secret itself
Standard Webhooks       ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
                        HMAC-SHA256 of "id.timestamp.body">``; the key is the base64-decoded rest
                        of a ``whsec_`` secret, else the secret's bytes (standardwebhooks.com)
anything else           ``Authorization: Bearer <secret>`` (or the bare secret)
======================  =========================================================================

A call is judged on its first non-empty credential among ``webhook-signature``,
``X-Forgejo-Signature``, ``X-Gitea-Signature``, ``X-Hub-Signature-256``, ``X-Gitlab-Token`` and
``Authorization`` (Forgejo and Gitea also send GitHub's header; Gitea sends its signature headers
empty when it has no secret).

:func:`verify_delivery` decides, top to bottom: the method (405), whether a secret is configured
(403), the credential (400 malformed, 401 wrong or missing; a Standard Webhooks timestamp more
than 5 minutes off is 401), a delivery id seen before (409), then whether the payload deploys: a
ping or a push to another branch is *ignored* (200, with the reason), anything else authentic is
*accepted* (202). A body that is not JSON is accepted too, for generic callers.

The replay memory is the one piece of state: a bounded :class:`DeliveryMemory` of the calls
accepted or ignored in the last 10 minutes. It is bound to what is signed (issue 20 finding 12): a
body signed with an HMAC (GitHub, Gitea, Forgejo) is remembered by that HMAC *and* by its delivery
id header, since the header is outside the signature and a replay may drop or change it; a
Standard Webhooks call by its signed ``webhook-id``; the token schemes (GitLab, Bearer), which sign
nothing, by their delivery id header alone. Nothing here reads the clock; the caller passes
``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from .errors import UsageError

__all__ = [
    "ADMIN_TOKEN_ENV",
    "REPLAY_MEMORY",
    "REPLAY_WINDOW",
    "SYNC_TOKEN_ENV",
    "TIMESTAMP_TOLERANCE",
    "Delivery",
    "DeliveryMemory",
    "Outcome",
    "Scheme",
    "Verdict",
    "WebhookSecret",
    "require_admin_token",
    "token_matches",
    "verify_delivery",
]

SYNC_TOKEN_ENV = "LBREC_SYNC_TOKEN"
ADMIN_TOKEN_ENV = "LBREC_ADMIN_TOKEN"  # the proxy's (proxy/app.py); spelled here, core is pure
REPLAY_MEMORY = 2048  # replay keys remembered at most (a signed delivery takes up to two)
REPLAY_WINDOW = 600.0  # seconds a delivery id is remembered
TIMESTAMP_TOLERANCE = 300.0  # seconds a Standard Webhooks timestamp may be off, either way

_STANDARD_PREFIX = "whsec_"
_DELIVERY_HEADERS = (  # the first present names the delivery; Gitea and Forgejo send several
    "x-github-delivery",
    "x-forgejo-delivery",
    "x-gitea-delivery",
    "webhook-id",
    "idempotency-key",  # GitLab: the same across retries of one event
    "x-gitlab-event-uuid",
)
_EVENT_HEADERS = ("x-github-event", "x-forgejo-event", "x-gitea-event", "x-gitlab-event")


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # sync now
    IGNORED = "ignored"  # authentic, but nothing to deploy (ping, another branch)
    REFUSED = "refused"  # not authentic, malformed, or a replay


class Scheme(StrEnum):
    """Which credential authenticated the call (the first present, in this order)."""

    STANDARD = "standard-webhooks"
    FORGEJO = "forgejo"
    GITEA = "gitea"
    GITHUB = "github"
    GITLAB = "gitlab"
    BEARER = "bearer"


# The schemes whose credential is an HMAC of the body alone: the delivery id header is unsigned.
_BODY_HMAC_SCHEMES = frozenset({Scheme.FORGEJO, Scheme.GITEA, Scheme.GITHUB})


@dataclass(frozen=True, slots=True)
class WebhookSecret:
    """``LBREC_SYNC_TOKEN``, parsed once: the token, and the Standard Webhooks signing key."""

    token: str = field(repr=False)
    standard_key: bytes = field(repr=False)

    @classmethod
    def parse(cls, token: str) -> WebhookSecret:
        """An empty token disables the webhook. A ``whsec_`` token must be base64 after the
        prefix (the Standard Webhooks key); the other schemes use the whole token as it is."""
        if not token.startswith(_STANDARD_PREFIX):
            return cls(token, _bytes(token))
        try:
            key = base64.b64decode(token[len(_STANDARD_PREFIX) :], validate=True)
        except binascii.Error as err:
            raise UsageError(
                f"{SYNC_TOKEN_ENV}: a whsec_ secret must be base64 after the prefix ({err})",
                hint="copy the secret from the sender exactly, or use one without whsec_",
            ) from err
        return cls(token, key)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One call as it arrived: ``body`` is the raw bytes (signatures cover exactly those)."""

    method: str
    headers: Mapping[str, str]
    body: bytes
    now: float  # Unix time, seconds
    source: str  # the peer's address, for the log


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    status: int  # the HTTP status to answer with
    reason: str  # one line for the caller and the log
    scheme: Scheme | None = None  # None when no credential verified
    delivery_id: str | None = None

    @property
    def sync(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


class DeliveryMemory:
    """The replay keys (delivery ids, signatures) seen in the last ``window`` seconds, at most
    ``capacity`` of them (oldest forgotten first). A replay is measured from the first
    sighting: retrying a replay does not extend it."""

    __slots__ = ("_capacity", "_seen", "_window")

    def __init__(self, *, capacity: int = REPLAY_MEMORY, window: float = REPLAY_WINDOW) -> None:
        self._capacity = capacity
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, delivery_id: str, now: float) -> float | None:
        """Record ``delivery_id``; if it was already seen within the window, return how many
        seconds ago instead (and record nothing)."""
        seen = self.remember_all((delivery_id,), now)
        return None if seen is None else seen[1]

    def remember_all(self, keys: Sequence[str], now: float) -> tuple[str, float] | None:
        """Record every one of ``keys`` (one call, several names for it); if any was already
        seen within the window, return that key and how many seconds ago instead (and record
        nothing)."""
        while self._seen:
            oldest, first = next(iter(self._seen.items()))
            if now - first < self._window:
                break
            del self._seen[oldest]
        for key in keys:
            first_seen = self._seen.get(key)
            if first_seen is not None and now - first_seen < self._window:
                return key, max(now - first_seen, 0.0)
        for key in keys:
            self._seen[key] = now
            self._seen.move_to_end(key)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return None


def require_admin_token(sync_token: str, admin_token: str) -> None:
    """The rule: with the webhook on, the admin listener's reading endpoints require a token.

    ``POST /-/sync`` is meant to be reached from a forge, through a TLS proxy that connects from
    a loopback peer, so whatever that proxy forwards reaches the admin listener as if local.
    Hence a set ``LBREC_SYNC_TOKEN`` needs a set ``LBREC_ADMIN_TOKEN``; raises
    :class:`UsageError` otherwise (issue 20 finding 11)."""
    if sync_token and not admin_token:
        raise UsageError(
            f"{SYNC_TOKEN_ENV} is set but {ADMIN_TOKEN_ENV} is not: the webhook makes the "
            "admin listener reachable through a reverse proxy, so its reading endpoints "
            f"(/-/pool, /-/stats, /metrics, the status page) must require a token: set "
            f"{ADMIN_TOKEN_ENV}",
            hint=f"e.g. {ADMIN_TOKEN_ENV}=$(openssl rand -hex 32), and forward only POST "
            "/-/sync from the TLS proxy (docs/operations.md)",
        )


def verify_delivery(
    delivery: Delivery, *, secret: WebhookSecret, branch: str, memory: DeliveryMemory
) -> Verdict:
    """The verdict on one call; records its replay keys in ``memory`` once it is authentic."""
    if delivery.method.upper() != "POST":
        return _refused(405, f"method {delivery.method} not allowed: POST only")
    if not secret.token:
        return _refused(403, f"webhook disabled: start lbrec up with {SYNC_TOKEN_ENV} set")
    headers = {name.lower(): value for name, value in delivery.headers.items()}
    checked = _authenticate(headers, delivery.body, secret=secret, now=delivery.now)
    if isinstance(checked, Verdict):
        return checked
    if checked is Scheme.STANDARD:  # the id is signed, and wins over any other header
        delivery_id: str | None = headers["webhook-id"].strip()
    else:
        delivery_id = next((headers[h].strip() for h in _DELIVERY_HEADERS if headers.get(h)), None)
    keys = [f"id:{delivery_id}"] if delivery_id else []
    if checked in _BODY_HMAC_SCHEMES:
        keys.append(f"hmac-sha256:{_mac(_bytes(secret.token), delivery.body).hex()}")
    seen = memory.remember_all(keys, delivery.now)
    if seen is not None:
        key, age = seen
        what = "this signed body" if key.startswith("hmac-") else f"delivery {key[3:]}"
        return Verdict(
            Outcome.REFUSED,
            409,
            f"replay: {what} was already received {age:.0f} s ago",
            checked,
            delivery_id,
        )
    outcome, reason = _route(headers, delivery.body, branch=branch)
    status = 202 if outcome is Outcome.ACCEPTED else 200
    return Verdict(outcome, status, reason, checked, delivery_id)


def _refused(status: int, reason: str) -> Verdict:
    return Verdict(Outcome.REFUSED, status, reason)


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _bytes(text: str) -> bytes:
    # Headers and the environment decode undecodable bytes as surrogates; give them back.
    return text.encode("utf-8", "surrogateescape")


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(_bytes(presented), _bytes(expected))


def _authenticate(
    headers: Mapping[str, str], body: bytes, *, secret: WebhookSecret, now: float
) -> Scheme | Verdict:
    """The scheme whose credential verifies, or the refusal."""
    key = _bytes(secret.token)
    if headers.get("webhook-signature", "").strip():
        return _standard(headers, body, key=secret.standard_key, now=now)
    for scheme, label in (
        (Scheme.FORGEJO, "X-Forgejo-Signature"),
        (Scheme.GITEA, "X-Gitea-Signature"),
        (Scheme.GITHUB, "X-Hub-Signature-256"),
    ):
        presented = headers.get(label.lower(), "").strip()
        if not presented:
            continue
        prefix = "sha256=" if scheme is Scheme.GITHUB else ""
        digest = presented.removeprefix(prefix) if presented.startswith(prefix) else ""
        if not _is_hex(digest, 64):
            return _refused(400, f"{label}: expected {prefix}<64 hex digits> (HMAC-SHA256)")
        if not _same(digest.lower(), _mac(key, body).hex()):
            return _refused(401, f"{label} does not match the body (HMAC-SHA256 with the secret)")
        return scheme
    if "x-gitlab-token" in headers:
        if not _same(headers["x-gitlab-token"], secret.token):
            return _refused(401, "X-Gitlab-Token is not the secret")
        return Scheme.GITLAB
    authorization = headers.get("authorization")
    if authorization is not None:
        if not token_matches(authorization, secret.token):
            return _refused(401, "Authorization: bad token (expected Bearer <secret>)")
        return Scheme.BEARER
    return _refused(
        401,
        "no credential: send X-Hub-Signature-256, X-Gitea-Signature, X-Forgejo-Signature, "
        "X-Gitlab-Token, webhook-signature (Standard Webhooks) or Authorization: Bearer",
    )


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time check of a bare token: ``Authorization: Bearer <token>`` (any case, spaces
    around) or the token itself. An empty ``expected`` token matches nothing."""
    if not expected or presented is None:
        return False
    value = presented.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return _same(value, expected)


def _standard(
    headers: Mapping[str, str], body: bytes, *, key: bytes, now: float
) -> Scheme | Verdict:
    msg_id = headers.get("webhook-id", "").strip()
    stamp = headers.get("webhook-timestamp", "").strip()
    if not msg_id or not stamp:
        missing = "webhook-id" if not msg_id else "webhook-timestamp"
        return _refused(400, f"Standard Webhooks: {missing} missing beside webhook-signature")
    if not stamp.isascii() or not stamp.isdigit():
        return _refused(400, f"webhook-timestamp: {stamp[:32]!r} is not Unix time in seconds")
    expected = base64.b64encode(_mac(key, _bytes(f"{msg_id}.{stamp}.") + body)).decode()
    versioned = [part.partition(",") for part in headers["webhook-signature"].split()]
    signatures = [sig for version, comma, sig in versioned if comma and version == "v1"]
    if not signatures:
        return _refused(400, "webhook-signature: no v1,<base64> signature")
    # Compare each one, all the way: how many were tried leaks nothing about the key.
    if not any([_same(sig, expected) for sig in signatures]):
        return _refused(401, "webhook-signature does not match (HMAC-SHA256 of id.timestamp.body)")
    skew = now - int(stamp)
    if abs(skew) > TIMESTAMP_TOLERANCE:
        when = f"{skew:.0f} s old" if skew > 0 else f"{-skew:.0f} s in the future"
        return _refused(
            401, f"webhook-timestamp {stamp} is {when} (limit {TIMESTAMP_TOLERANCE:.0f} s)"
        )
    return Scheme.STANDARD


def _route(headers: Mapping[str, str], body: bytes, *, branch: str) -> tuple[Outcome, str]:
    """Whether an authentic call deploys: pings and pushes elsewhere are ignored, with why."""
    event = next((headers[h].strip() for h in _EVENT_HEADERS if headers.get(h)), "")
    if event.lower() == "ping":
        return Outcome.IGNORED, "ignored: ping (the webhook reaches lbrec; a push will sync)"
    following = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    payload = _json_payload(headers, body) or {}
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        return Outcome.ACCEPTED, "sync triggered"  # not a push: a generic caller, or CI
    if ref != following:
        return Outcome.IGNORED, f"ignored: push to {ref}, following {branch}"
    after = payload.get("after")
    if payload.get("deleted") is True or (isinstance(after, str) and set(after) == {"0"}):
        return Outcome.IGNORED, f"ignored: {ref} was deleted; the deployed commit stays"
    return Outcome.ACCEPTED, f"sync triggered by a push to {ref}"


def _json_payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    """The JSON object of the body (GitHub's form encoding carries it in ``payload=``), or
    None for anything else."""
    try:
        text = body.decode()
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            text = parse_qs(text).get("payload", [""])[0]
        doc = json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return doc if isinstance(doc, dict) else None


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)
