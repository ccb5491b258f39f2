"""The contracts of one exchange (proxy/exchange.py) with what surrounds it, as Protocols.

An :class:`~proxy.exchange.Exchange` needs a :class:`Downstream` (the client connection it
answers on: ``ClientConnection`` in proxy/downstream.py) and, through it, an
:class:`ExchangeServer` (what the server lends every exchange: the pool, the limits, the loop,
passive health: ``ProxyServer`` in proxy/server.py). Written down so the shape is visible,
checked by mypy at the one place an Exchange is made, and so an Exchange can be driven without
sockets (tests/proxy/test_exchange.py), as ``UpstreamListener`` already is for the upstream side.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .exchange import Exchange
    from .pool import Backend, Pool
    from .stats import Answers

__all__ = ["Downstream", "ExchangeServer"]


class ExchangeServer(Protocol):
    """What the server lends an exchange."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def pool(self) -> Pool: ...  # read again on a retry: the newest pool
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


class Downstream(Protocol):
    """The client connection an exchange answers on."""

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
    def closed(self) -> bool: ...
    @property
    def closing(self) -> bool: ...  # graceful shutdown: close after this exchange
    @property
    def write_paused(self) -> bool: ...  # the client reads slower than the backend answers
    @property
    def bytes_out(self) -> int: ...  # bytes written to the client so far
    def write(self, data: bytes) -> None: ...
    def reject(self, exchange: Exchange, status: int, message: str) -> bool: ...
    def abort(self) -> None: ...
    def pause_reading_for_body(self, pause: bool) -> None: ...
    def pause_reading_for_upstream(self, pause: bool) -> None: ...
    def start_tunnel(self, exchange: Exchange) -> asyncio.Transport: ...
    def exchange_done(self, exchange: Exchange, *, keep_alive: bool) -> None: ...
