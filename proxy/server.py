"""The proxy server: owns the live pool, the listening socket, client connections and timers.

Reload = :meth:`ProxyServer.apply_config`, which builds a new :class:`~proxy.pool.Pool` and
swaps it in with one assignment. Requests already running hold a reference to the backend
they started on and finish there; removed backends are drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from pathlib import Path

from . import frontdoor, passive, route_features
from .acme_challenges import Challenges
from .balancer import SmoothWeightedRoundRobin
from .config import BackendsConfig
from .downstream import ClientConnection
from .features import Features
from .framing import RequestHead
from .front import Front
from .health import HealthMonitor, HealthState, ProbeResult, ProbeTarget, RiseFall
from .maintenance import HoldGate
from .pool import Backend, Pool
from .pool_build import build_pool
from .route_stats import RouteFigures
from .runtime import code_kind, listening_socket, package_version, runtime_info
from .stats import Answers
from .tls import CertStore

__all__ = ["ProxyServer", "code_kind", "listening_socket", "package_version", "runtime_info"]


def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


_log = logging.getLogger("lbrec.proxy")

_SWEEP_INTERVAL = 0.25


class ProxyServer:
    """One listening socket and everything a request needs. Implements ``StatusSink``."""

    def __init__(
        self,
        config: BackendsConfig,
        *,
        digest: str = "",
        access_log: bool = False,
        fast_lane: bool = True,
        config_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.workers = workers  # --workers N: each worker's rate limits are 1/N
        self.access_log = access_log
        # proxy/fastlane.py on new client connections; False: every request the general way
        self.fast_lane = fast_lane
        self.connections: set[ClientConnection] = set()
        # TLS connections accepted whose handshake is not done yet (no app protocol yet): a
        # shutdown waits for them too, as for the connections above (proxy/tls_transport.py)
        self.handshaking: set[object] = set()
        self.stopping = False  # shutdown began: a connection made now says Connection: close
        self._adopt_limits(config)
        self.refused_connections = 0
        # The 503's text with no backend in the pool; `lbrec up` says why before its first pool
        self.empty_reason = "no backends configured"
        self.runtime = runtime_info(self.loop)
        self.health: HealthMonitor | None = None
        self.started_at = time.time()
        self.reloads = 0
        self.reload_errors = 0
        self.last_reload_error: str | None = None
        self.last_reload_at = time.time()  # the last pool swapped in
        self.last_reload_attempt_at = self.last_reload_at  # ... or the last file rejected
        self.ejections = 0
        self.answers = Answers()  # every answer of the listener (for /metrics)
        # X-Request-ID for requests that carry none: a random prefix per process, a counter
        self._request_id_prefix = os.urandom(6).hex().encode()
        self._request_ids = 0
        self.draining: list[Backend] = []  # removed, still finishing requests (for display)
        self._listener: asyncio.AbstractServer | None = None
        self._tls_listener: asyncio.AbstractServer | None = None
        self.tls_failures = 0  # TLS handshakes that failed (no certificate, bad client...)
        self.tls_port: int | None = None  # the TLS listener's port, once bound
        self.tls_listen: str | None = None  # its tls.listen (proxy/frontdoor.py follow_listen)
        self.tls_opening: asyncio.Task[None] | None = None  # a reload's new TLS listener
        self.tls_held = False  # lbrec up holds the TLS listener and moves it (proxy/app.py)
        self.tls_inherited: socket.socket | None = None  # ... handed down, not served yet
        self._sweeper: asyncio.Task[None] | None = None
        self.pool = self._build_pool(config, digest, previous=None)
        # The front door (routes, TLS, ACME challenges): None while it has nothing to decide
        # (no routes, no TLS), so the request path pays one attribute test.
        # relative paths of backends.json (certificates, ACME challenges) are from its folder
        self.config_dir = config_dir if config_dir is not None else Path(".")
        self.certs = CertStore(())
        self.challenges: Challenges | None = None
        self.front: Front | None = None
        # the Strict-Transport-Security field of TLS answers: (name, value)
        self.hsts: tuple[bytes, bytes] | None = None
        self._adopt_front(config)
        # The routes' features (proxy/route_features.py): ``features`` is what the request
        # path reads, None while no route has one and nothing is paused
        self.gate = HoldGate()  # maintenance.json's state, followed while serving
        self.route_figures = RouteFigures()
        self.background: set[asyncio.Task[None]] = set()
        self.feature_set: Features | None = None
        self.features: Features | None = None
        self.by_route = False
        self._follows = config_dir is not None  # maintenance.json beside backends.json
        route_features.adopt(self, config)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, sock: socket.socket, *, backlog: int = 2048) -> tuple[str, int]:
        """Serve on a bound listening socket (see :func:`listening_socket`, or one handed
        over by the previous proxy); returns its address."""
        self._listener = await self.loop.create_server(
            lambda: ClientConnection(self), sock=sock, backlog=backlog
        )
        self._sweeper = self.loop.create_task(self._sweep(), name="proxy-sweeper")
        if self._follows:
            follow = route_features.follow_maintenance(self)
            self.background.add(self.loop.create_task(follow, name="proxy-maintenance"))
        sockname = self._listener.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start_tls(self, sock: socket.socket, *, backlog: int = 2048) -> tuple[str, int]:
        """Serve the TLS listener (``tls.listen``) on a bound socket (proxy/frontdoor.py), in
        place of the one before (it stops accepting; its connections go on)."""
        listener = await frontdoor.start_tls(self, sock, backlog=backlog)
        if self._tls_listener is not None:
            self._tls_listener.close()
        self._tls_listener = listener
        sockname = self._tls_listener.sockets[0].getsockname()
        self.tls_port = int(sockname[1])
        self._adopt_front(self.pool.config)  # redirects name the port as bound
        return str(sockname[0]), int(sockname[1])

    def tls_listening_fd(self) -> int | None:
        """The TLS listener's listening socket, for ``--handoff`` (proxy/sites.py)."""
        sockets = getattr(self._tls_listener, "sockets", None) or ()
        return int(sockets[0].fileno()) if sockets else None

    def stop_tls(self) -> None:
        """No TLS listener any more (``tls:`` left the file); its connections go on."""
        if self._tls_listener is not None:
            self._tls_listener.close()
            self._tls_listener = None
        self.tls_port = None
        self._adopt_front(self.pool.config)

    def tls_failed(self, why: str) -> None:
        self.tls_failures += 1
        _log.debug("tls: %s", why, extra={"event": "tls_failure", "reason": why})

    def use_config_dir(self, folder: Path) -> None:
        """Where backends.json is: its relative paths (certificates, ACME) are from there."""
        self.config_dir = folder
        self._follows = True
        self._adopt_front(self.pool.config)
        route_features.adopt(self, self.pool.config)

    def _adopt_front(self, config: BackendsConfig) -> None:
        self.certs, self.challenges, self.front, self.hsts = frontdoor.adopt(
            config, self.config_dir, previous=self.certs, https_port=self.tls_port
        )
        self.by_route = self.front is not None or getattr(self, "features", None) is not None

    def attach_health(self, monitor: HealthMonitor) -> None:
        self.health = monitor
        self._update_health(initial=True)

    async def shutdown(self, *, drain_timeout: float = 30.0, idle_grace: float = 1.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout``), close.

        Idle keep-alive connections are not closed at once: a client may be sending its next
        request right now, and a close would make it fail. For ``idle_grace`` seconds every
        answer says ``Connection: close`` (busy clients move to a new connection, to the
        successor after a handoff); then the connections still idle are closed.
        """
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        if self.tls_opening is not None:
            self.tls_opening.cancel()
        if self._tls_listener is not None:
            self._tls_listener.close()
            self._tls_listener = None
        for conn in list(self.connections):
            conn.closing = True
        now = self.loop.time()
        deadline = now + drain_timeout
        grace_end = now + min(idle_grace, drain_timeout)
        # a TLS connection still in its handshake becomes one of self.connections (closing)
        # when it ends: wait for both
        while (self.connections or self.handshaking) and self.loop.time() < deadline:
            if self.loop.time() >= grace_end:
                self._close_idle(idle_grace)
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.health is not None:
            await self.health.close()
        await route_features.retire_all(self)
        for backend in self.pool.backends.values():
            backend.drain()
        if self._listener is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._listener.wait_closed()
            self._listener = None

    def _close_idle(self, grace: float) -> None:
        """A drain: close the connections idle for ``grace`` (one made or answered within it,
        a TLS handshake that just ended for instance, may have its request on its way)."""
        now = self.loop.time()
        for conn in list(self.connections):
            since = conn.idle_since
            if since is None or now - since >= grace:
                conn.close_if_idle()

    # -- reload --------------------------------------------------------------------------------

    def apply_config(self, config: BackendsConfig, *, digest: str = "") -> None:
        """Swap in ``config``. Backends that keep name and URL keep their state."""
        old = self.pool
        if (config.listen, config.admin) != (old.config.listen, old.config.admin):
            _log.warning(
                "listen/admin changed in the file; they apply at the next start only",
                extra={"event": "restart_needed"},
            )
        pool = self._build_pool(config, digest, previous=old)
        kept = {id(b) for b in pool.backends.values()}
        removed = [b for b in old.backends.values() if id(b) not in kept]
        self._adopt_limits(config)
        self.pool = pool  # the swap: new requests see the new pool from here on
        self._adopt_front(config)
        route_features.adopt(self, config)
        frontdoor.follow_listen(self, config)
        for backend in removed:
            backend.drain()
        self.draining = [b for b in self.draining + removed if b.inflight or b.conns.opened]
        self.reloads += 1
        self.last_reload_at = self.last_reload_attempt_at = time.time()
        self._update_health(initial=False)
        _log.info(
            "pool reloaded: generation %s, %d backends (%s)",
            config.generation or "-",
            len(pool.backends),
            ", ".join(f"{b.name}={b.weight}" for b in pool.backends.values()),
            extra={
                "event": "reload",
                "generation": config.generation,
                "backends": {b.name: b.weight for b in pool.backends.values()},
                "removed": [b.name for b in removed],
            },
        )

    def _adopt_limits(self, config: BackendsConfig) -> None:
        """The per-request limits and the trust list, read on the data path without a lookup
        through the pool's config."""
        self.max_header_bytes = config.limits.max_header_bytes
        self.max_body_bytes = config.limits.max_body_bytes
        self.max_connections = config.limits.max_connections
        self._trusted = _networks(config.trusted_proxies)

    def _build_pool(self, config: BackendsConfig, digest: str, *, previous: Pool | None) -> Pool:
        return build_pool(config, digest, previous=previous)

    def _update_health(self, *, initial: bool) -> None:
        if self.health is None:
            return
        pool = self.pool
        self.health.update(
            [ProbeTarget(b.key, b.base_url, b.health_path) for b in pool.backends.values()],
            pool.config.health,
            initial={b.key: b.health for b in pool.backends.values()},
        )

    def is_trusted(self, ip: str) -> bool:
        """Whether a peer is a trusted proxy (its X-Forwarded-* / Forwarded are kept)."""
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._trusted)

    # -- health (StatusSink) and passive checks ------------------------------------------------

    def set_health(self, name: str, state: HealthState) -> None:
        pool = self.pool
        backend = pool.backends.get(name)
        if backend is not None:
            backend.health = state
            pool.refresh(backend)

    def record_probe(self, name: str, state: RiseFall, result: ProbeResult) -> None:
        backend = self.pool.backends.get(name)
        if backend is not None:
            backend.last_check = result

    def shown(self) -> list[Backend]:
        """The pool's backends, then the removed ones still draining (status page, metrics)."""
        current = list(self.pool.backends.values())
        return current + [b for b in self.draining if b not in current]

    def pool_for(self, head: RequestHead, route: str | None = None) -> Pool:
        """The pool that serves ``head``: the route's (``RouteEntry.key``, as proxy/front.py
        chose it), or the one pool without routes. A route gone by a reload between two
        attempts has no pool: an empty one (503), never another site's backends."""
        if route is None:
            return self.pool
        return self.pool.routes.get(route) or self._no_route

    @property
    def _no_route(self) -> Pool:
        pool = self.pool
        return Pool(pool.config, {}, SmoothWeightedRoundRobin({}), pool.digest)

    def next_request_id(self) -> bytes:
        """A new X-Request-ID, unique across workers and restarts (random 48-bit prefix)."""
        self._request_ids += 1
        return b"%s-%x" % (self._request_id_prefix, self._request_ids)

    def passive_failure(self, backend: Backend, reason: str) -> None:
        """A failed attempt: counted, and the backend ejected past ``passive.max_fails``."""
        passive.failed(self, backend, reason)

    # -- housekeeping --------------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Read timeouts of requests in flight; idle client and backend connections.

        One pass over the connections every 250 ms costs less than a timer per request.
        """
        ticks = 0
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            ticks += 1
            now = self.loop.time()
            timeouts = self.pool.config.timeouts
            idle = timeouts.idle
            header = timeouts.header
            for conn in list(self.connections):
                active = conn.active
                if active is not None:
                    active.check_timeout(now)
                elif conn.head_started is not None:
                    if now - conn.head_started > header:
                        conn.header_timeout()
                elif conn.idle_since is not None and now - conn.idle_since > idle:
                    conn.idle_timeout()
            if ticks % 4 == 0:
                for backend in self.pool.backends.values():
                    backend.conns.close_idle(idle_before=now - idle)
                if self.draining:
                    self.draining = [b for b in self.draining if b.inflight or b.conns.opened]
