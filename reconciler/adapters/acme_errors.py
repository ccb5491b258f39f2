"""EDGE. What went wrong at the CA, in its own words: :class:`AcmeFailure` (the message, the
CA's Retry-After, the challenge whose validation failed) and how the ``acme`` library's and
``requests``' exceptions are turned into it.
"""

from __future__ import annotations

import re

import requests
from acme import errors, messages

from ..core.certs import CHALLENGES, Challenge

__all__ = ["AcmeFailure", "challenge_type", "describe"]


class AcmeFailure(Exception):
    """An order or a call that failed: ``message`` is the CA's own error (or why it could not
    be reached), ``retry_after`` its Retry-After in seconds, ``challenge`` the challenge whose
    validation failed, if that is what failed."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        challenge: Challenge | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.challenge = challenge


def challenge_type(challb: messages.ChallengeBody) -> str:
    """A challenge's type; the library knows tls-alpn-01 only as an unrecognized one."""
    typ = getattr(challb.chall, "typ", None)
    if isinstance(typ, str):
        return typ
    return str(getattr(challb.chall, "jobj", {}).get("type", "unknown"))


def describe(err: BaseException, directory: str) -> tuple[str, Challenge | None]:
    """The CA's own words for a failure (and the challenge that failed validation)."""
    if isinstance(err, errors.ValidationError):
        parts: list[str] = []
        failed: Challenge | None = None
        for authzr in err.failed_authzrs:
            ident = authzr.body.identifier.value
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    typ = challenge_type(challb)
                    failed = next((c for c in CHALLENGES if c == typ), failed)
                    parts.append(f"{ident}: {typ}: {challb.error}")
        return "; ".join(parts) or "validation failed", failed
    if isinstance(err, errors.IssuanceError):
        return f"the CA refused to issue: {err.error}", None
    if isinstance(err, messages.Error):
        return str(err), None
    if isinstance(err, errors.TimeoutError):
        return "the CA did not finish the order in time", None
    if isinstance(err, requests.exceptions.RequestException):
        kind = type(err).__name__
        return f"cannot reach the ACME server {directory}: {kind}: {_short(err)}", None
    return f"{type(err).__name__}: {err}", None


def _short(err: BaseException) -> str:
    """The cause of a network error in a few words (requests nests it deep in its text)."""
    text = str(err)
    for pattern in (r"\[Errno -?\d+\] ([^'\")\]]+)", r"(Read timed out)", r"(timed out)"):
        if found := re.search(pattern, text):
            return found.group(1).strip()
    return text[:200]
