"""Forward-auth (issue 23): ask an authentication service whether a request may pass, as
Traefik's ForwardAuth and Caddy's ``forward_auth`` do.

The service gets a ``GET`` of its own URL with the request's header fields (not its body, nor
its hop-by-hop or framing fields) and where the request went, in ``X-Forwarded-Method``,
``-Proto``, ``-Host``, ``-Uri`` and ``-For``. A 2xx answer lets the request through, with the
header fields of ``copy_headers`` taken from that answer (and every client-sent field of those
names removed first, so that a client cannot pass ``X-User: admin`` itself; the fields the proxy
writes itself, framing and forwarding ones, are never copied). Any other answer
(a 302 to a login page, a 401, a 403) is sent to the client as it is (its status, its header
fields but hop-by-hop ones, a body of at most 64 KiB). Redirects are never followed. An error
(refused, reset, a timeout, an answer too big) fails closed: a 503 to the client.

aiohttp's client (the health probes' library), one session per worker, with the route's own
timeout on each check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict

from .config import ForwardAuthSettings
from .framing import HOP_BY_HOP, PROTECTED

__all__ = ["ForwardAuthClient", "Verdict", "apply_copied"]

_NOT_SENT = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
        b"host",
    }
)
_NOT_RETURNED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}
)
MAX_DENY_BODY = 64 * 1024
# Never copied onto a request, whatever copy_headers lists: what frames it or where it came
# from is the proxy's own to write (a copied Content-Length or X-Forwarded-For would sit beside
# the proxy's: a second framing, a forged client address)
_NEVER_COPIED = frozenset(
    name.decode("ascii") for name in HOP_BY_HOP | PROTECTED | {b"x-request-id"}
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The service's answer: ``allowed`` with the fields to copy onto the request, or the
    answer to send the client (``status``, ``headers``, ``body``). ``error`` says why it
    failed closed (for the log and the metrics), None when the service answered."""

    allowed: bool
    status: int
    copy: list[tuple[bytes, bytes]] = field(default_factory=list)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    error: str | None = None


def _closed(reason: str) -> Verdict:
    return Verdict(
        False,
        503,
        headers=[(b"Content-Type", b"text/plain; charset=utf-8")],
        body=b"authentication service unavailable\n",
        error=reason,
    )


class ForwardAuthClient:
    """Checks requests against one service. Owns its aiohttp session (made on first use)."""

    def __init__(self, settings: ForwardAuthSettings) -> None:
        self.settings = settings
        self._copy = {name.lower() for name in settings.copy_headers} - _NEVER_COPIED
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=60),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # never keeps a client's cookies
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(
        self,
        *,
        method: bytes,
        uri: bytes,
        host: bytes,
        proto: str,
        client_ip: str,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> Verdict:
        """Ask the service about one request (its head as the client sent it)."""
        sent: list[tuple[str, str]] = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in headers
            if name.lower() not in _NOT_SENT and not name.lower().startswith(b"x-forwarded-")
        ]
        sent += [
            ("X-Forwarded-Method", method.decode("latin-1")),
            ("X-Forwarded-Proto", proto),
            ("X-Forwarded-Host", host.decode("latin-1")),
            ("X-Forwarded-Uri", uri.decode("latin-1")),
            ("X-Forwarded-For", client_ip),
        ]
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        try:
            async with self._client().get(
                self.settings.url,
                headers=CIMultiDict(sent),
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                if 200 <= answer.status < 300:
                    copy = [
                        (name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in answer.headers.items()
                        if name.lower() in self._copy
                    ]
                    return Verdict(True, answer.status, copy=copy)
                body = await _read_capped(answer.content, MAX_DENY_BODY + 1)
                if len(body) > MAX_DENY_BODY:
                    return _closed("answer body too large")
                returned = [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in answer.headers.items()
                    if name.lower() not in _NOT_RETURNED
                ]
                return Verdict(False, answer.status, headers=returned, body=body)
        except TimeoutError:
            return _closed("timeout")
        except (aiohttp.ClientError, OSError, ValueError, UnicodeError) as err:
            return _closed(type(err).__name__)


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or ``limit`` bytes, whichever comes first (one ``read`` returns
    only what has arrived: a page written in pieces would be cut)."""
    body = bytearray()
    while len(body) < limit:
        chunk = await content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def apply_copied(
    headers: Sequence[tuple[bytes, bytes]],
    names: Iterable[str],
    copied: Sequence[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]]:
    """PURE. The request's header fields for the backend: every field named in ``names``
    (``copy_headers``) removed, whatever the client sent, then the service's ``copied`` ones."""
    drop = {name.lower().encode("latin-1") for name in names}
    return [(n, v) for n, v in headers if n.lower() not in drop] + list(copied)
