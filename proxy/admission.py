"""The request side of a route's features (issue 23), between the front door's decision and
the first byte sent to a backend: admission, the body limit, the instance, and the proxy's own
answers with the route's pages.

An :class:`~proxy.exchange.Exchange` whose route has a :class:`~proxy.features.RoutePlan`
calls :func:`begin` instead of going straight to a backend. Admission (proxy/features.py
``RoutePlan.admit``: maintenance and its hold, the allow-list, basic auth, forward-auth, the
rate limit and the concurrency cap) answers at once where it can (``admit_now``); only what
must wait (a hold, a password hash off the loop, the auth service) runs as a task, kept as the
downstream's ``task``: a client that goes away cancels it (``Exchange.client_lost`` ends the
exchange). Request body bytes that arrive meanwhile are held by the exchange's
:class:`~proxy.body.RequestBody` (the client is paused past its replay limit), exactly as
while a backend connection opens. A concurrency slot is released when the exchange ends,
whatever the ending (:func:`end`); a WebSocket's when its tunnel closes.

The address admission judges is :func:`client_address`: the peer, or, when the peer is a
trusted proxy, the first untrusted hop of its X-Forwarded-For (never a header as sent by an
untrusted client).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from .compress import Encoder
from .features import Admitted, LocalAnswer, RoutePlan
from .http import reason_phrase
from .route_stats import RouteCounters

if TYPE_CHECKING:
    from .exchange import Exchange
    from .pool import Backend, Pool

__all__ = [
    "RouteState",
    "abandon",
    "begin",
    "choose",
    "client_address",
    "count",
    "end",
    "send_local",
    "send_page",
    "too_large",
]

_log = logging.getLogger("lbrec.proxy")

_TEXT: Final = (b"Content-Type", b"text/plain; charset=utf-8")


class RouteState:
    """What one exchange of a route with features carries: its plan, its counters, the
    concurrency slot it holds, the pinning cookie and the encoder of its answer."""

    __slots__ = ("admitting", "cookie", "counters", "encoder", "general", "plan", "slot")

    def __init__(self, plan: RoutePlan, counters: RouteCounters) -> None:
        self.plan = plan
        self.counters = counters
        self.admitting = False  # an admission task runs for it
        self.slot: bytes | None = None  # the concurrency slot held (released at the end)
        self.cookie: tuple[bytes, bytes] | None = None  # Set-Cookie of its answer (affinity)
        self.encoder: Encoder | None = None  # its answer is compressed
        # the answer goes the general way (the fast lane relays a head as it is)
        self.general = plan.compress is not None

    def body_over(self, size: int) -> bool:
        """Whether ``size`` bytes of request body pass the route's ``max_body``."""
        limit = self.plan.max_body
        return bool(limit) and size > (limit or 0)


def client_address(exchange: Exchange) -> str:
    """The client's address as the proxy trusts it: the peer, or the first untrusted hop of
    X-Forwarded-For (right to left) when the peer is a trusted proxy."""
    client = exchange.client
    peer = client.client_ip
    if not client.trusted:
        return peer
    hops = [
        _address_of(hop.strip())
        for name, value in exchange.request.forwarded
        if name.lower() == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
        if hop.strip()
    ]
    server = exchange.server
    for hop in reversed(hops):
        if not server.is_trusted(hop):
            return hop
    return hops[0] if hops else peer


def _address_of(hop: str) -> str:
    """PURE. An X-Forwarded-For hop without the port some proxies add (``192.0.2.1:51234``,
    ``[2001:db8::1]:443``): the client is its address, not one connection of it."""
    if hop.startswith("["):
        end = hop.find("]")
        return hop[1:end] if end > 0 else hop
    if hop.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has two or more)
        return hop.partition(":")[0]
    return hop


def begin(exchange: Exchange, plan: RoutePlan) -> None:
    """Admission of one request to ``plan``'s route; it goes on to a backend only if let in."""
    server = exchange.server
    state = exchange.state = RouteState(plan, server.route_figures.of(exchange.route))
    head = exchange.request
    # the announced length, or the body bytes read with the head, before the start
    if state.body_over(max(head.content_length or 0, exchange.body.size)):
        too_large(exchange)
        return
    gate = server.gate
    address = client_address(exchange)
    verdict = plan.admit_now(gate, address, head.headers, time.monotonic())
    if verdict is not None:
        _settle(exchange, state, verdict)
        return
    state.admitting = True
    exchange.client.task = server.loop.create_task(_admit(exchange, state, address))


async def _admit(exchange: Exchange, state: RouteState, address: str) -> None:
    head = exchange.request
    client = exchange.client
    try:
        verdict: LocalAnswer | Admitted = await state.plan.admit(
            gate=exchange.server.gate,
            client_ip=address,
            method=head.method,
            uri=head.original_target or head.target,  # as the client sent it
            host=head.host or b"",
            proto=client.proto.decode("ascii"),
            headers=head.headers,
        )
    except Exception:  # a bug must not leave the request hanging: it fails closed
        _log.exception("admission failed", extra={"event": "bug"})
        verdict = LocalAnswer(503, [_TEXT], b"Service Unavailable\n", "admission error", "allow")
    if exchange.finished or not state.admitting:  # the client went (or the body was too large)
        if isinstance(verdict, Admitted):
            state.plan.release(verdict.slot)
        return
    state.admitting = False
    client.task = None
    _settle(exchange, state, verdict)


def _settle(exchange: Exchange, state: RouteState, verdict: LocalAnswer | Admitted) -> None:
    plan = state.plan
    if isinstance(verdict, LocalAnswer):
        state.counters.refused[verdict.kind] += 1
        page = plan.pages.page(verdict.status) if verdict.paged else None
        if page is not None:
            headers = [h for h in verdict.headers if h[0].lower() != b"content-type"]
            send_local(
                exchange,
                verdict.status,
                [*headers, (b"Content-Type", page.content_type)],
                page.body,
            )
        else:
            send_local(exchange, verdict.status, verdict.headers, verdict.body)
        exchange.answered_here(verdict.status, verdict.reason)
        return
    state.slot = verdict.slot
    if plan.forward is not None:  # copies of copy_headers the client sent are dropped
        head = exchange.request
        fields = tuple(plan.forward_headers(head.headers, verdict))
        exchange.request = replace(head, header_fields=fields, raw_headers=None)
    exchange.proceed()


def choose(exchange: Exchange, pool: Pool, state: RouteState) -> Backend | None:
    """The instance by the route's affinity (``sticky``), in place of the pool's pick: the
    client's pinned instance while it takes traffic, else the rotation's and a new pin."""
    affinity = state.plan.affinity
    assert affinity is not None
    tried = exchange.tried or ()
    eligible = [key for key in pool.balancer.eligible if key not in tried]

    def pick() -> str | None:
        backend = pool.pick(tried)
        return None if backend is None else backend.key

    choice = affinity.choose(
        exchange.request.headers, eligible, pick, secure=exchange.client.secure
    )
    if not tried:
        state.counters.affinity[choice.kind] += 1
    elif choice.cookie is not None:  # a retry: its pinned instance failed under it
        state.counters.affinity["moved"] += 1
    state.cookie = choice.cookie
    if choice.cookie is not None:
        state.general = True
    backend = pool.backends.get(choice.key) if choice.key is not None else None
    return backend if backend is not None else pool.pick(tried)


def too_large(exchange: Exchange) -> None:
    """The route's ``max_body`` is exceeded: a 413 if nothing of an answer was sent yet
    (Content-Length: before anything goes to a backend; chunked: when the limit is passed),
    else the answer is cut. The connection closes after it (the rest of the body is unread)."""
    client = exchange.client
    if exchange.finished:
        return
    if exchange.response_started:
        client.abort()
        return
    state = exchange.state
    task = client.task
    if task is not None:  # an admission, or a backend connect: nobody waits for it now
        task.cancel()
        client.task = None
    if state is not None:
        state.admitting = False
    _drop_attempt(exchange)
    exchange.keep_alive = False
    plan = state.plan if state is not None else None
    if plan is None or not send_page(exchange, plan, 413):
        send_local(exchange, 413, [_TEXT], b"Content Too Large\n")
    exchange.answered_here(413, "request body over the route's max_body")


def _drop_attempt(exchange: Exchange) -> None:
    """End the attempt in flight without an answer (the request is refused after all); its
    backend connection is not reused."""
    if not exchange.attempting:
        return
    exchange.attempting = False
    body = exchange.body
    if body.upstream is not None:
        body.detach()
    backend, conn = exchange.backend, exchange.upstream
    exchange.upstream = None
    if backend is not None:
        backend.inflight -= 1
    if conn is not None:
        conn.abort()


def abandon(exchange: Exchange, state: RouteState) -> None:
    """The client went away before any backend attempt was under way: during admission, or
    while a backend connection opened (either task is cancelled by the downstream). The
    exchange ends, and with it the concurrency slot it holds (:func:`end`)."""
    during = "admission" if state.admitting else "the backend connect"
    state.admitting = False
    exchange.answered_here(499, f"client went away during {during}", clean=False)


def count(exchange: Exchange, status: int) -> None:
    """An answer, in its route's figures."""
    state = exchange.state
    if state is not None:
        state.counters.answered(status)
    else:
        exchange.server.route_figures.of(exchange.route).answered(status)


def send_page(exchange: Exchange, plan: RoutePlan, status: int) -> bool:
    """Answer with the route's page for ``status`` (error_pages); False when it has none."""
    page = plan.pages.page(status)
    if page is None:
        return False
    send_local(exchange, status, [(b"Content-Type", page.content_type)], page.body)
    return True


def send_local(
    exchange: Exchange, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """An answer of the proxy's own, whole, through the Downstream contract."""
    client = exchange.client
    if not exchange.body.complete:
        exchange.keep_alive = False  # the rest of the request body will not be read
    head_only = exchange.request.method == b"HEAD"
    fields = [*headers, (b"Content-Length", b"%d" % len(body))]
    reason = reason_phrase(status)
    client.send_head(exchange, status, reason, fields, bodyless=head_only, upgrade=None)
    if not head_only and body:
        client.send_body(body)
    client.send_end()


def end(exchange: Exchange, state: RouteState) -> None:
    """The exchange is over, whatever its ending: its slot back, its figures counted."""
    state.admitting = False
    slot = state.slot
    if slot is not None:
        state.slot = None
        tunnel = exchange.tunnel
        if exchange.status == 101 and tunnel is not None and not exchange.client.closed:
            # an open WebSocket holds its backend connection: its slot, until it closes
            plan = state.plan
            tunnel.on_close = lambda: plan.release(slot)
        else:
            state.plan.release(slot)
    encoder = state.encoder
    if encoder is not None:
        state.encoder = None
        counters = state.counters
        counters.bytes_in += encoder.size_in
        counters.bytes_out += encoder.size_out
