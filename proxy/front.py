"""PURE. The front door's decision for one request, before any backend is picked: which route,
or a redirect to HTTPS, an ACME challenge's answer, or a refusal (404, 421) with its reason.

One function for both listeners and for HTTP/1.1 and HTTP/2 alike (the exchange asks it once
per request, with what the connection knows: TLS or not, the SNI name). Without routes and
without TLS it always answers "the whole pool", at the cost of one attribute test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import RouteEntry, TlsSettings
from .routing import Match, Router, split_host

__all__ = ["ACME_PREFIX", "Answer", "Decision", "Front", "Pass"]

ACME_PREFIX = b"/.well-known/acme-challenge/"
_SAFE_METHODS = (b"GET", b"HEAD")


@dataclass(frozen=True, slots=True)
class Pass:
    """Serve it: from the route's pool (None: the whole pool, no routes configured)."""

    match: Match | None
    hsts: bytes | None = None  # a Strict-Transport-Security header line for the answer

    @property
    def route(self) -> RouteEntry | None:
        return None if self.match is None else self.match.route


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer it here, without a backend: a redirect, a challenge, or a refusal."""

    status: int
    reason: str  # the body's text and the access log's reason
    location: bytes | None = None
    body: bytes | None = None  # an ACME key authorization, sent as is


Decision = Pass | Answer

WHOLE_POOL = Pass(None)


class Front:
    """What the front door knows of the current config: the routes, the TLS listener, which
    hosts have a certificate, and the ACME challenges pending. Rebuilt on every reload."""

    __slots__ = ("_challenge", "_has_certificate", "_hsts", "_https_port", "router", "tls")

    def __init__(
        self,
        router: Router,
        tls: TlsSettings | None,
        *,
        has_certificate: Callable[[str], bool] = lambda _host: False,
        challenge: Callable[[str], bytes | None] = lambda _token: None,
        https_port: int | None = None,
    ) -> None:
        self.router = router
        self.tls = tls
        self._has_certificate = has_certificate
        self._challenge = challenge
        self._hsts = (
            b"Strict-Transport-Security: max-age=%d\r\n" % tls.hsts
            if tls is not None and tls.hsts is not None
            else None
        )
        # where redirects point: the TLS listener's port as bound (tls.listen may say 0)
        port = str(https_port) if https_port else tls.listen.rsplit(":", 1)[1] if tls else "443"
        self._https_port = b"" if port == "443" else b":" + port.encode()

    @property
    def hsts(self) -> bytes | None:
        """The Strict-Transport-Security header line of answers over TLS, if asked for."""
        return self._hsts

    @property
    def trivial(self) -> bool:
        """No routes and no TLS: every request takes the whole pool (the exchange skips us)."""
        return not self.router and self.tls is None

    def decide(
        self,
        *,
        secure: bool,
        sni: str | None,
        authority: bytes,
        method: bytes,
        target: bytes,
    ) -> Decision:
        if secure:
            return self._secure(sni, authority, target)
        return self._plain(authority, method, target)

    # -- the plain listener ---------------------------------------------------------------
    def _plain(self, authority: bytes, method: bytes, target: bytes) -> Decision:
        if self.tls is not None and self.tls.acme_dir and target.startswith(ACME_PREFIX):
            token = target[len(ACME_PREFIX) :].split(b"?", 1)[0].decode("latin-1")
            answer = self._challenge(token) if _token_ok(token) else None
            if answer is not None:
                return Answer(200, "acme challenge", body=answer)
            return Answer(404, "no such ACME challenge")
        match = self.router.match(authority, target) if self.router else None
        if self.router and match is None:
            return Answer(404, "no route for this host and path")
        route = match.route if match is not None else None
        if self.tls is None or (route is not None and route.tls == "off"):
            return Pass(match)
        host = split_host(authority)[0]
        wants_tls = route is not None and route.tls == "required"
        routed = wants_tls or route is not None or self._has_certificate(host)
        if self.tls.redirect_http and routed:
            status = 301 if method in _SAFE_METHODS else 308
            location = b"https://" + host.encode() + self._https_port + _origin_form(target)
            return Answer(status, "redirect to https", location=location)
        if wants_tls:
            return Answer(421, "this site is served over HTTPS only")
        return Pass(match)

    # -- the TLS listener -----------------------------------------------------------------
    def _secure(self, sni: str | None, authority: bytes, target: bytes) -> Decision:
        host = split_host(authority)[0]
        if sni is not None and host != sni.lower().rstrip("."):
            # Never routed by Host alone: the connection was made (and its certificate
            # checked) for another name.
            return Answer(421, f"this connection is for {sni}, not {host}")
        if not self.router:
            return Pass(None, self._hsts)
        match = self.router.match(authority, target)
        if match is None:
            if self.router.knows(authority):
                return Answer(404, "no route for this host and path")
            return Answer(421, f"no site {host} on this listener")
        if match.route.tls == "off":
            return Answer(421, "this site is served over plain HTTP only")
        return Pass(match, self._hsts)


def _token_ok(token: str) -> bool:
    """An ACME token is base64url (RFC 8555 8.3): nothing else reaches the file system."""
    return 0 < len(token) <= 256 and all(c.isalnum() or c in "-_" for c in token)


def _origin_form(target: bytes) -> bytes:
    """The path and query of a request target (absolute-form loses its scheme and host)."""
    if target.startswith(b"/"):
        return target
    if b"://" in target:
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        return rest[slash:] if slash >= 0 else b"/"
    return b"/"
