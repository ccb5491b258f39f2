"""PURE (but for the fallback secret drawn at import). Affinity of a route (issue 23,
``sticky:``): every request of a client to the same instance while that instance is healthy.

- ``cookie:NAME``: the first answer to a client sets ``NAME=<value>`` (``HttpOnly``,
  ``SameSite=Lax``, ``Secure`` over TLS, ``Path=`` the route's path prefix, a session
  cookie). The value is an HMAC of the instance's identity (its container id, else its URL)
  under the route's secret: it names
  one instance without telling which (no address, port or container id can be read from it),
  and nobody without the secret can make the value of another instance. A client whose
  instance left, failed or is draining is given another one by the weighted rotation, and a new
  cookie. New clients are spread by the route's rotation, so weights hold over clients.
- ``header:NAME``: no cookie; the header's value (a user id, a tenant) picks the instance by
  weighted rendezvous hashing (highest random weight) keyed with the same secret: the same value
  lands on the same instance, values spread by weight, and an instance that leaves moves only its
  own values (the others stay put). A request without the header takes the rotation.

The secret: ``affinity_key`` of backends.json (the reconciler's, derived from the host's
``.lbrec/sticky.key``: the same in every worker and after a restart), one per route
(:func:`route_secret`); without it, one drawn by this proxy at import (the workers of
``--workers N`` fork after it and share it; a restart re-pins clients, once).

Canaries: on a route with ``sticky:`` this affinity replaces the pool's pick (proxy/admission.py
``choose``): a pinned client stays on its instance, hence its version. A sticky canary without
it (proxy/pool.py ``Pool.stick``) still keys on the application's value; docs/routes.md says why
it was not folded into this mechanism.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from .config import BackendEntry

__all__ = [
    "Affinity",
    "Choice",
    "cookie_value",
    "identity_of",
    "route_secret",
    "set_cookie",
    "sticky_from_headers",
]

_FALLBACK_SECRET = os.urandom(32)


def route_secret(affinity_key: str | None, route: str) -> bytes:
    """The key of one route's cookies: HMAC of the route's name (host + path) under the pool's
    ``affinity_key`` (hex), else under this proxy's own random secret."""
    pool = bytes.fromhex(affinity_key) if affinity_key else _FALLBACK_SECRET
    return hmac.new(pool, b"lbrec affinity route\0" + route.encode(), hashlib.sha256).digest()


def identity_of(entry: BackendEntry) -> str:
    """What names an instance across reloads: its container (a new container is a new
    instance, even at the same URL), else its URL."""
    return entry.container or entry.url


def cookie_value(secret: bytes, identity: str) -> str:
    """PURE. 128 bits of HMAC-SHA256 of the instance's identity, base64url (22 characters)."""
    digest = hmac.new(secret, b"instance\0" + identity.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def set_cookie(name: str, value: str, *, secure: bool, path: str = "/") -> tuple[bytes, bytes]:
    """The ``Set-Cookie`` header field that pins a client."""
    text = f"{name}={value}; Path={path}; HttpOnly; SameSite=Lax"
    return b"Set-Cookie", (text + "; Secure" if secure else text).encode("ascii")


def sticky_from_headers(
    is_cookie: bool, name: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes | None:
    """PURE. The cookie's or the header's value in a request (``name`` in lower case)."""
    for header, value in headers:
        lowered = header.lower()
        if is_cookie and lowered == b"cookie":
            for part in value.split(b";"):
                cookie, _, content = part.strip().partition(b"=")
                if cookie == name:  # cookie names are case-sensitive
                    return content.strip()
        elif not is_cookie and lowered == name:
            return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class Choice:
    """The instance (its pool key) for a request, and the cookie to set on its answer (None:
    the client is already pinned there, or the route keys on a header). ``kind`` for the
    metrics: ``new`` (no pin yet), ``kept`` (pinned, or the header's instance), ``moved``
    (pinned to an instance that left or fails: a new pin)."""

    key: str | None
    cookie: tuple[bytes, bytes] | None = None
    kind: str = "kept"


class Affinity:
    """A route's affinity over its instances. Built on every reload from the route's
    ``sticky`` and the pool's instances: ``instances`` maps a pool key (what the balancer picks
    and the health checks count by) to (identity, weight)."""

    __slots__ = (
        "_by_value",
        "_cookie_name",
        "_instances",
        "_is_cookie",
        "_name",
        "_path",
        "_secret",
        "_values",
    )

    def __init__(
        self,
        sticky: str,
        secret: bytes,
        instances: Mapping[str, tuple[str, int]],
        *,
        path: str = "/",
    ) -> None:
        """``path``: the route's path prefix, the cookie's ``Path`` (two routes of one host
        with the same cookie name then keep their own pins)."""
        self._path = path.rstrip("/") or "/"
        kind, _, name = sticky.partition(":")
        self._is_cookie = kind == "cookie"
        self._cookie_name = name
        self._name = name.encode("latin-1") if self._is_cookie else name.lower().encode("latin-1")
        self._secret = secret
        self._instances = dict(instances)
        # pool key -> cookie value, and back: a pin made or read is one dictionary access
        self._values = {key: cookie_value(secret, ident) for key, (ident, _w) in instances.items()}
        self._by_value = {value: key for key, value in self._values.items()}

    def value_of(self, key: str) -> str:
        """The cookie value that pins a client to the instance ``key``."""
        return self._values[key]

    def choose(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        eligible: Collection[str],
        pick: Callable[[], str | None],
        *,
        secure: bool,
    ) -> Choice:
        """PURE (``pick`` is the route's weighted rotation). ``eligible``: the instances taking
        traffic now (healthy, not ejected, not draining)."""
        value = sticky_from_headers(self._is_cookie, self._name, headers)
        if not self._is_cookie:
            if value is None:
                return Choice(pick(), kind="new")
            return Choice(self._rendezvous(value, eligible))
        if value is not None:
            key = self._by_value.get(value.decode("latin-1"))
            if key is not None and key in eligible:
                return Choice(key)
        kind = "new" if value is None else "moved"
        key = pick()
        if key is None or key not in self._instances:
            return Choice(key, kind=kind)
        cookie = set_cookie(self._cookie_name, self.value_of(key), secure=secure, path=self._path)
        return Choice(key, cookie, kind)

    def _rendezvous(self, value: bytes, eligible: Collection[str]) -> str | None:
        """Weighted highest-random-weight: score = -weight / ln(u), u uniform in (0, 1) from a
        keyed hash of (value, instance); the best score wins."""
        best: str | None = None
        best_score = -math.inf
        for key in eligible:
            identity, weight = self._instances.get(key, ("", 0))
            if weight <= 0:
                continue
            data = value + b"\0" + identity.encode()
            digest = hashlib.blake2b(data, key=self._secret, digest_size=8).digest()
            u = (int.from_bytes(digest, "big") + 0.5) / 2**64
            score = -weight / math.log(u)
            if score > best_score:
                best, best_score = key, score
        return best
