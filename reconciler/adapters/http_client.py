"""EDGE. The reconciler's one way to make an HTTP request (stdlib http.client, as urllib uses).

Every outgoing call of the reconciler (the proxy's admin API, rollout readiness probes, the
notify webhook) goes through :func:`request` (or :func:`get` / :func:`post_json`), which is
hardened where ``urllib.request.urlopen`` is not:

* **No redirects.** A 3xx is returned as that status (with its ``Location``), never followed:
  a server cannot turn a POST into a GET to some other host-local URL, nor make a redirect to
  another service count as an answer of its own.
* **One deadline for the whole exchange** (name resolution, connect, TLS handshake, sending,
  the head and the body), not a timeout per read: every blocking socket operation gets only
  the time left, so a server trickling one byte a second cannot hold the caller past
  ``timeout``.
* **A cap on the body** (:data:`DEFAULT_MAX_BODY` unless the caller passes another):
  at most ``max_body`` bytes are read and the rest is left unread (``Response.truncated``).
  ``max_body=0`` reads no body at all (a probe judges the status only).
* **Headers stay with their host.** The caller's headers (an ``Authorization`` token) go to
  the URL's host and nowhere else: no redirect is followed and no proxy from the environment
  (``http_proxy``, ``https_proxy``) is used. A URL with credentials in it
  (``user:pass@host``) is refused: pass them as a header.
* **Typed results and errors.** A :class:`Response` for any status; an :class:`HttpError`
  subclass (:class:`InvalidRequest`, :class:`Timeout`, :class:`ConnectFailed`,
  :class:`ProtocolError`) when no answer was read, its message naming the method, the URL
  and why.

``https`` URLs are verified against the system's trust store. The errors are
:mod:`.http_errors`'s, the deadline's resolver and sockets :mod:`.deadline`'s.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..core.redact import redact_url
from .deadline import DeadlineSocket, DeadlineTLSSocket, resolve
from .http_errors import ConnectFailed, HttpError, InvalidRequest, ProtocolError, Timeout, why

__all__ = [
    "DEFAULT_MAX_BODY",
    "USER_AGENT",
    "ConnectFailed",
    "HttpError",
    "InvalidRequest",
    "ProtocolError",
    "Response",
    "Timeout",
    "get",
    "post_json",
    "redact_url",
    "request",
]

DEFAULT_MAX_BODY: Final = 4096
USER_AGENT: Final = "lbrec"


@dataclass(frozen=True, slots=True)
class Response:
    """An answer as read: any status (a 3xx is an answer, never followed).

    ``body`` holds at most the ``max_body`` bytes asked for; ``truncated`` is true when the
    answer had more (the rest was not read)."""

    method: str
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool

    @property
    def ok(self) -> bool:
        """A 2xx."""
        return 200 <= self.status < 300

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status < 400

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key.lower() == wanted:
                found = value
        return found

    @property
    def location(self) -> str | None:
        """Where a 3xx points (reported, never followed)."""
        return self.header("Location") if self.is_redirect else None

    def describe(self) -> str:
        """``answered 302 (to /elsewhere)``: the status for a report."""
        where = self.location
        return f"answered {self.status}" + (f" (to {redact_url(where)})" if where else "")

    def json(self) -> Any:
        """The body as JSON; a :class:`ProtocolError` when it is not, or was cut at the cap."""
        if self.truncated:
            raise ProtocolError(
                self.method, self.url, f"answer body longer than the {len(self.body)}-byte cap"
            )
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise ProtocolError(self.method, self.url, f"answer body is not JSON: {err}") from None


def get(
    url: str,
    *,
    timeout: float,
    max_body: int = DEFAULT_MAX_BODY,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """GET ``url``: see :func:`request`."""
    return request("GET", url, timeout=timeout, max_body=max_body, headers=headers)


def post_json(
    url: str,
    payload: Any,
    *,
    timeout: float,
    max_body: int = DEFAULT_MAX_BODY,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """POST ``payload`` as JSON (sorted keys) to ``url``: see :func:`request`."""
    body = json.dumps(payload, sort_keys=True).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    return request("POST", url, body=body, timeout=timeout, max_body=max_body, headers=sent)


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    body: bytes | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Make one HTTP/1.1 request to ``url`` and read its answer, all within ``timeout`` seconds.

    Returns the :class:`Response` whatever its status (a 3xx is not followed); raises an
    :class:`HttpError` subclass when no answer could be read in time. At most ``max_body``
    bytes of the body are read. ``headers`` go to ``url``'s host only.
    """
    if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):
        raise InvalidRequest(method, url, f"timeout must be a positive number, not {timeout!r}")
    if max_body < 0:
        raise InvalidRequest(method, url, f"max_body must be 0 or more, not {max_body}")
    deadline = time.monotonic() + timeout
    scheme, host, port, target = _split(method, url)
    try:
        sock = _connect(method, url, scheme=scheme, host=host, port=port, deadline=deadline)
    except TimeoutError:
        raise Timeout(method, url, f"no connection within {timeout:g}s") from None
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, context=_tls_context())
        if scheme == "https"
        else http.client.HTTPConnection(host, port)
    )
    conn.sock = sock  # connected and under the deadline: http.client never connects itself
    try:
        try:
            conn.putrequest(method, target)
            conn.putheader("User-Agent", USER_AGENT)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body)
        except (ValueError, http.client.InvalidURL) as err:  # a header name or value (CR, LF)
            raise InvalidRequest(method, url, f"bad request line or header: {err}") from None
        answer = conn.getresponse()
        data, truncated = _read_body(answer, max_body)
        return Response(
            method=method,
            url=redact_url(url),
            status=answer.status,
            reason=answer.reason,
            headers=tuple(answer.getheaders()),
            body=data,
            truncated=truncated,
        )
    except TimeoutError:
        raise Timeout(method, url, f"no complete answer within {timeout:g}s") from None
    except (http.client.HTTPException, ssl.SSLError) as err:
        raise ProtocolError(method, url, why(err)) from None
    except OSError as err:
        raise ConnectFailed(method, url, why(err)) from None
    finally:
        conn.close()


def _read_body(answer: http.client.HTTPResponse, max_body: int) -> tuple[bytes, bool]:
    """At most ``max_body`` bytes of the body, and whether there was more."""
    if max_body == 0 or answer.status in (204, 304) or answer.length == 0:
        return b"", not (answer.length == 0 or answer.status in (204, 304))
    data = b""
    while len(data) <= max_body:
        chunk = answer.read(max_body + 1 - len(data))
        if not chunk:
            return data, False
        data += chunk
    return data[:max_body], True


def _split(method: str, url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target) of ``url``, or :class:`InvalidRequest`."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidRequest(method, url, f"not a valid URL: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest(method, url, f"scheme must be http or https, not {scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(
            method, url, "credentials in the URL are refused: pass them as a header"
        )
    host = parts.hostname
    if not host:
        raise InvalidRequest(method, url, "no host in the URL")
    if any(c in url for c in "\r\n\t ") or any(ord(c) < 0x20 for c in url):
        raise InvalidRequest(method, url, "whitespace or control characters in the URL")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _connect(
    method: str, url: str, *, scheme: str, host: str, port: int, deadline: float
) -> socket.socket:
    """A socket connected to ``host:port`` (TLS verified for https), every step of it and
    every later read and write bounded by ``deadline``; raises TimeoutError past it."""
    addresses = resolve(method, url, host, port, deadline)
    last: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = DeadlineSocket(family, kind, proto)
        sock.deadline = deadline
        try:
            sock.arm()
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise
        except OSError as err:
            sock.close()
            last = err
            continue
        if scheme == "http":
            return sock
        tls = _tls_context().wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        assert isinstance(tls, DeadlineTLSSocket)
        try:
            tls.deadline = deadline
            tls.arm()
            tls.do_handshake()
        except TimeoutError:
            tls.close()
            raise
        except ssl.SSLCertVerificationError as err:
            tls.close()
            reason = f"TLS verification failed: {err.verify_message}"
            raise ConnectFailed(method, url, reason) from None
        except OSError as err:  # SSLError included: a failed handshake
            tls.close()
            raise ConnectFailed(method, url, f"TLS handshake failed: {why(err)}") from None
        return tls
    raise ConnectFailed(method, url, f"cannot connect to {host}:{port}: {why(last)}")


_tls_lock = threading.Lock()
_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """The verifying client context (system trust store), made once, with deadline sockets."""
    global _tls
    with _tls_lock:
        if _tls is None:
            context = ssl.create_default_context()
            context.sslsocket_class = DeadlineTLSSocket
            _tls = context
        return _tls
