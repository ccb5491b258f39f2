"""EDGE. How a request of the reconciler's HTTP client fails: one :class:`HttpError` per kind,
each naming the method, the URL (credentials never shown) and why, in a few words.
"""

from __future__ import annotations

import http.client

from ..core.redact import redact_url

__all__ = ["ConnectFailed", "HttpError", "InvalidRequest", "ProtocolError", "Timeout", "why"]


class HttpError(Exception):
    """No usable answer came back: ``method`` ``url`` (credentials never shown) and why."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = redact_url(url)
        self.reason = reason
        super().__init__(f"{method} {self.url}: {reason}")


class InvalidRequest(HttpError, ValueError):
    """The request cannot be made as asked (scheme, host, credentials in the URL, a header)."""


class Timeout(HttpError, TimeoutError):
    """The whole exchange did not finish within its deadline."""


class ConnectFailed(HttpError, ConnectionError):
    """No connection (name resolution, refused, unreachable, TLS verification)."""


class ProtocolError(HttpError):
    """The peer answered something that is not HTTP/1.x, or closed mid-answer."""


def why(err: BaseException | None) -> str:
    """What went wrong with a connection or an answer, in the words of the message."""
    if err is None:
        return "no address to try"
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed after {len(err.partial)} body bytes"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed before an answer"
    if isinstance(err, http.client.BadStatusLine):
        return f"not an HTTP answer: {str(err)[:80]!r}"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return str(text)
