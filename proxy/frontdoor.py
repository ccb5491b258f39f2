"""The front door's I/O beside its pure decision (proxy/front.py): what a reload adopts
(routes, certificates, ACME challenges), the TLS listener, and a request answered at the door.

Kept apart from the server and the exchange so that they stay what they are (a listener's
state, one request's state machine) and the front door has one home: the server calls
:func:`adopt` and :func:`follow_listen` on every reload (the TLS listener opens, moves or
closes with ``tls.listen``, see :func:`listen_tls`); an exchange calls :func:`decide`
when the server has a front (routes or TLS) and it answers through the Downstream contract.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .acme_challenges import ACME_TLS_ALPN, Challenges
from .admission import send_local
from .config import BackendsConfig, parse_hostport
from .front import Answer, Front
from .routing import Router
from .runtime import listening_socket, listens_at
from .tls import CertStore, listener_context
from .tls_transport import ClientHello, TlsConnection

if TYPE_CHECKING:
    from .exchange import Exchange
    from .server import ProxyServer

__all__ = ["adopt", "decide", "follow_listen", "listen_tls", "serve_tls", "start_tls"]

_log = logging.getLogger("lbrec.proxy")


def adopt(
    config: BackendsConfig, base: Path, *, previous: CertStore, https_port: int | None
) -> tuple[CertStore, Challenges | None, Front | None, tuple[bytes, bytes] | None]:
    """The front door of ``config``: its certificates (relative to ``base``, backends.json's
    folder; a pair that fails to load keeps its previous certificate), ACME challenges, the
    Front (None when it has nothing to decide: no routes, no TLS) and the HSTS header field."""
    tls = config.tls
    if tls is None:
        certs, challenges = CertStore(()), None
    else:
        pairs = [(str(base / c.cert), str(base / c.key)) for c in tls.certificates]
        certs = CertStore.load(pairs, previous=previous)
        challenges = Challenges(base / tls.acme_dir) if tls.acme_dir else None
    front = Front(
        Router(config.routes or ()),
        tls,
        has_certificate=lambda host: certs.for_name(host) is not None,
        challenge=challenges.http01 if challenges is not None else lambda _token: None,
        https_port=https_port,
    )
    hsts = None
    if front.hsts is not None:  # the header once as a field: (name, value)
        name, _, value = front.hsts.partition(b": ")
        hsts = (name, value.rstrip(b"\r\n"))
    return certs, challenges, None if front.trivial else front, hsts


async def start_tls(
    server: ProxyServer, sock: socket.socket, *, backlog: int = 2048
) -> asyncio.Server:
    """The TLS listener: each connection through proxy/tls_transport.py (the ClientHello read
    first: an ACME TLS-ALPN-01 validation gets its challenge certificate, everyone else the
    certificate of their SNI name, chosen from the server's current store at each handshake:
    a reload swaps certificates without a new listener), then HTTP/2 for ALPN h2, HTTP/1.1
    otherwise."""
    from .http2.connection import app_protocol

    context = listener_context(lambda: server.certs)

    def choose(hello: ClientHello | None) -> ssl.SSLContext:
        challenges = server.challenges
        if hello is not None and hello.alpn == (ACME_TLS_ALPN,) and challenges is not None:
            challenge = challenges.tls_alpn01(hello.server_name)
            if challenge is not None:
                return challenge
        return context

    def connection() -> TlsConnection:
        return TlsConnection(
            choose,
            lambda alpn: app_protocol(server, alpn),
            handshake_timeout=server.pool.config.timeouts.header,
            on_failure=server.tls_failed,
            handshaking=server.handshaking,
        )

    return await server.loop.create_server(connection, sock=sock, backlog=backlog)


async def listen_tls(server: ProxyServer, hostport: str) -> tuple[str, int]:
    """Bind ``hostport`` (SO_REUSEPORT: a successor, after a handoff or `lbrec up`'s take-over,
    binds beside it) and serve the TLS listener there, in place of the one before."""
    sock = listening_socket(*parse_hostport(hostport), reuse_port=True)
    return await serve_tls(server, sock, hostport)


async def serve_tls(server: ProxyServer, sock: socket.socket, hostport: str) -> tuple[str, int]:
    """Serve the TLS listener on ``sock`` (bound here, handed over by a predecessor, or held by
    lbrec up) as ``tls.listen`` ``hostport``; the socket is closed if that fails."""
    try:
        bound = await server.start_tls(sock)
    except BaseException:
        sock.close()
        raise
    server.tls_listen = hostport
    return bound


def follow_listen(server: ProxyServer, config: BackendsConfig) -> None:
    """At a reload, a ``tls.listen`` other than the one served opens, moves or closes the TLS
    listener without a restart: `lbrec up` serves before its first pass has written ``tls:``,
    and an operator may add TLS to a running proxy. A bind that fails is logged, the listener
    before it stays, and the next reload tries again."""
    wanted = config.tls.listen if config.tls is not None else None
    previous = server.tls_listen
    if wanted == previous:
        return
    held = server.tls_inherited
    if server.tls_held:  # lbrec up binds tls.listen and moves it, with new processes
        if wanted is None or held is None or not listens_at(held, parse_hostport(wanted)):
            return
        server.tls_inherited = None
    server.tls_listen = wanted  # one attempt per change of the file, not one per reload
    if wanted is None:
        server.stop_tls()
        _log.info("TLS listener closed (no tls: in the file)", extra={"event": "tls_closed"})
        return

    async def open_listener() -> None:
        try:
            if held is not None and server.tls_held:
                host, port = await serve_tls(server, held, wanted)
            else:
                host, port = await listen_tls(server, wanted)
        except OSError as err:
            server.tls_listen = previous
            _log.error(
                "cannot serve TLS on %s: %s; %s",
                wanted,
                err,
                f"still on {previous}" if previous else "no TLS listener",
                extra={"event": "tls_listen_failed", "listen": wanted, "error": str(err)},
            )
            return
        _log.info(
            "TLS listener on %s:%d (tls.listen of the reloaded file)",
            host,
            port,
            extra={"event": "tls_listening", "listen": f"{host}:{port}"},
        )

    server.tls_opening = server.loop.create_task(open_listener(), name="proxy-tls-listen")


def decide(exchange: Exchange, front: Front) -> bool:
    """The front door's decision for one request (routes, HTTPS redirects, ACME challenges,
    404/421): True to go on to a backend of the route's pool, False when answered here."""
    client, head = exchange.client, exchange.request
    decision = front.decide(
        secure=client.secure,
        sni=client.sni,
        authority=head.host or b"",
        method=head.method,
        target=head.target,
    )
    if isinstance(decision, Answer):
        _answer_here(exchange, decision)
        return False
    match = decision.match
    if match is not None:
        exchange.route = match.route.key
        if match.route.strip_prefix:
            target = match.forwarded_target(head.target)
            if target != head.target:
                exchange.request = replace(head, target=target, original_target=head.target)
    return True


def _answer_here(exchange: Exchange, answer: Answer) -> None:
    """A redirect, an ACME key authorization or a refusal, from the proxy itself."""
    body = answer.body if answer.body is not None else answer.reason.encode() + b"\n"
    headers = [(b"Content-Type", b"text/plain")]
    if answer.location is not None:
        headers.append((b"Location", answer.location))
    send_local(exchange, answer.status, headers, body)
    exchange.answered_here(answer.status, answer.reason)
