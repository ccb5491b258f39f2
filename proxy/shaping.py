"""The answer side of a route's features (issue 23): the head as the client gets it (the
compression decision, ``Vary``, the affinity cookie) and the end of a compressed body.

Called by :class:`~proxy.answer.ShapedAnswer`, the general way of an exchange whose route has
features (proxy/admission.py ``RouteState``): :func:`shape_head` once per answer, with the
backend's status and head; the encoder it sets (proxy/compress.py ``Encoder``) then takes the
body read by read, flushed after each so a streaming answer is never held back, and
:func:`finish` writes the end of the compressed stream. An answer that is compressed or sets a
cookie never takes the fast lane (``RouteState.general``): the lane relays heads as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compress import Encoder, decide, rewrite_head

if TYPE_CHECKING:
    from .admission import RouteState
    from .exchange import Exchange

__all__ = ["delimited_by_close", "finish", "shape_head"]

Headers = list[tuple[bytes, bytes]]


def shape_head(exchange: Exchange, state: RouteState, status: int, headers: Headers) -> Headers:
    """The answer's header fields for the client; sets ``state.encoder`` when compressed."""
    out = headers
    settings = state.plan.compress
    if settings is not None and status >= 200:
        request = exchange.request
        accept = [v for n, v in request.headers if n.lower() == b"accept-encoding"]
        decision = decide(
            method=request.method,
            accept_encoding=b", ".join(accept) if accept else None,
            status=status,
            headers=headers,
            settings=settings,
        )
        if decision.coding is not None or decision.vary:
            out = rewrite_head(headers, decision)
        if decision.coding is not None:
            state.encoder = Encoder(decision.coding)
            state.counters.compressed += 1
    if state.cookie is not None and status >= 200:
        out = [*out, state.cookie]
    return out


def delimited_by_close(headers: Headers, *, bodyless: bool) -> bool:
    """Whether the backend's own head (before compression dropped its Content-Length) leaves
    the body delimited by the connection's close."""
    if bodyless:
        return False
    return not any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)


def finish(exchange: Exchange) -> None:
    """The backend's body is complete: the end of the compressed stream goes to the client,
    and the encoder's figures to the route's counters."""
    state = exchange.state
    encoder = state.encoder if state is not None else None
    if state is None or encoder is None:
        return
    state.encoder = None
    tail = encoder.finish()
    counters = state.counters
    counters.bytes_in += encoder.size_in
    counters.bytes_out += encoder.size_out
    if tail:
        exchange.client.send_body(tail)
