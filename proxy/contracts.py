"""The contracts of one exchange (proxy/exchange.py) with what surrounds it, as Protocols.

An :class:`~proxy.exchange.Exchange` answers on a :class:`Downstream` and is lent what it
needs by an :class:`ExchangeServer` (``ProxyServer`` in proxy/server.py). The downstream is
the client side of one request: the HTTP/1.1 connection (``ClientConnection`` in
proxy/downstream.py) today, an HTTP/2 stream tomorrow. The exchange must not know which: it
never writes protocol bytes of its own, it hands the answer over (a plain answer's bytes,
or head, body and end; an error) and the downstream encodes it, and keep-alive towards the
client is decided by the downstream alone. Written down so the shape is visible, checked by
mypy where an Exchange is made, and so an Exchange can be driven without sockets
(tests/proxy/test_exchange.py), as ``UpstreamListener`` already is for the upstream side.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .exchange import Exchange
    from .fastlane import PlainAnswer
    from .features import Features
    from .framing import RequestHead
    from .front import Front
    from .maintenance import HoldGate
    from .pool import Backend, Pool
    from .route_stats import RouteFigures
    from .stats import Answers
    from .tunnel import Tunnel

__all__ = ["Downstream", "ExchangeServer"]


class ExchangeServer(Protocol):
    """What the server lends an exchange."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    # The pool that serves ``head``: called once per attempt (a retry sees the newest pool).
    # The seam where routes by host and path will choose among pools.
    def pool_for(self, head: RequestHead, route: str | None = None) -> Pool: ...
    # The front door (proxy/front.py): None when there is nothing to decide (no routes, no TLS)
    @property
    def front(self) -> Front | None: ...
    @property
    def access_log(self) -> bool: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def answers(self) -> Answers: ...  # every answer, for /metrics
    @property
    def empty_reason(self) -> str: ...  # the 503's text while the pool has no backend
    def next_request_id(self) -> bytes: ...  # for a request that carries no X-Request-ID
    def passive_failure(self, backend: Backend, reason: str) -> None: ...
    def is_trusted(self, ip: str) -> bool: ...  # a trusted proxy (its X-Forwarded-For counts)
    # The routes' features (proxy/features.py): None while no route has one and nothing is
    # paused, so the request path pays one attribute test
    @property
    def features(self) -> Features | None: ...
    @property
    def gate(self) -> HoldGate: ...  # maintenance state and its hold (proxy/maintenance.py)
    @property
    def by_route(self) -> bool: ...  # count answers per route (routes or features in use)
    @property
    def route_figures(self) -> RouteFigures: ...  # per-route counters (proxy/route_stats.py)


class Downstream(Protocol):
    """The client side of one exchange: where it answers, and what it knows of the client.

    The exchange calls, per answer: ``relay_plain`` once (the fast lane), or ``send_head``
    then ``send_body`` (any number) and ``send_end``; or ``send_error``. Between ``hold`` and
    ``flush`` what it sends is buffered (one write per backend read). ``exchange_done`` ends
    every exchange; the downstream then decides whether the client connection goes on.
    """

    # A backend connect in progress for this client (cancelled if the client goes).
    task: asyncio.Task[None] | None

    @property
    def server(self) -> ExchangeServer: ...
    @property
    def client_ip(self) -> str: ...
    @property
    def trusted(self) -> bool: ...  # the peer is in trusted_proxies: its X-Forwarded-* are kept
    @property
    def forwarding(self) -> bytes: ...  # http.forwarding_lines(client_ip), made once
    @property
    def secure(self) -> bool: ...  # the client came over TLS (the front door, proxy/front.py)
    @property
    def sni(self) -> str | None: ...  # the TLS server name the client asked for
    @property
    def proto(self) -> bytes: ...  # b"https" or b"http": X-Forwarded-Proto, Forwarded proto=
    @property
    def closed(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...  # the client reads slower than the backend answers
    @property
    def bytes_out(self) -> int: ...  # bytes written to the client so far

    # -- the answer ----------------------------------------------------------------------------
    # The fast lane: when this downstream takes ``data``, the first read of the answer to
    # ``exchange``, as it is (proxy/fastlane.py: take_answer), it relays it and says what it
    # took; None: the answer goes the general way (always, where the lane does not apply).
    def relay_plain(self, exchange: Exchange, data: bytes) -> PlainAnswer | None: ...
    # The answer's head (hop-by-hop headers still in: the downstream drops them); returns
    # whether the backend delimits the body by closing.
    def send_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        bodyless: bool,
        upgrade: bytes | None,
    ) -> bool: ...
    def send_continue(self) -> None: ...  # the backend's 100 Continue, for an Expect request
    def send_body(self, data: bytes) -> None: ...
    def send_end(self) -> None: ...  # the body is complete
    def send_error(self, exchange: Exchange, status: int, text: str) -> None: ...  # the proxy's
    def hold(self) -> None: ...  # buffer what is sent until flush
    def flush(self, *, discard: bool = False) -> None: ...  # discard: drop what was held
    def abort(self) -> None: ...  # the answer cannot be completed: the client must see that

    # -- flow control and the end --------------------------------------------------------------
    def pause_reading_for_body(self, pause: bool) -> None: ...
    def pause_reading_for_upstream(self, pause: bool) -> None: ...
    def start_tunnel(self, tunnel: Tunnel) -> asyncio.Transport: ...
    # ``clean``: the answer is whole (else the client connection cannot go on).
    def exchange_done(self, exchange: Exchange, *, clean: bool) -> None: ...
