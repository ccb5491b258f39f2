"""Compose the proxy: data-path server, health probes, config watcher and admin listener.

:func:`serve` is the embeddable entry point (``lbrec proxy`` and ``lbrec up`` call it); it
owns every task it starts and stops them all before returning.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.registry import Collector

from . import frontdoor
from .admin import make_admin_app
from .config import BackendsConfig, ConfigError, parse_hostport
from .control import ControlLink
from .health import HealthMonitor
from .metrics import FiguresPublisher
from .reload import ConfigWatcher, read_config
from .runtime import listens_at
from .server import ProxyServer
from .sites import AdminSite, Listeners, Signals, sockname

__all__ = ["ADMIN_TOKEN_ENV", "ServeInfo", "ServeOptions", "parse_hostport", "serve"]

ADMIN_TOKEN_ENV = "LBREC_ADMIN_TOKEN"

_log = logging.getLogger("lbrec.proxy")


@dataclass(frozen=True, slots=True)
class ServeInfo:
    """Where the proxy ended up listening (ports are real even when 0 was asked for)."""

    listen: tuple[str, int]
    admin: tuple[str, int] | None
    server: ProxyServer
    tls: tuple[str, int] | None = None  # the TLS listener (tls.listen), when configured


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """Every option of :func:`serve`, frozen (as the reconciler's ``RuntimeOptions``): the
    command line (proxy/cli.py) builds one, an embedding process its own."""

    # where to listen: backends.json's "listen"/"admin" when None; port 0: an ephemeral one
    listen: str | tuple[str, int] | None = None
    admin: str | tuple[str, int] | None = None
    enable_admin: bool = True
    reuse_port: bool = False  # --workers N: one port, N processes
    # listening sockets bound by the caller (lbrec up, which holds them across a restart of
    # this process): then nothing is bound or taken over here, and the admin listener runs
    # only with admin_sock
    listen_sock: socket.socket | None = None
    admin_sock: socket.socket | None = None
    # tls_held: the caller holds the TLS listener too (lbrec up): tls_sock is served when it
    # listens where the file's tls.listen says, and nothing is bound here for TLS (up starts
    # new processes on a new socket when tls.listen moves)
    tls_sock: socket.socket | None = None
    tls_held: bool = False
    # a Unix socket path: a proxy serving there hands its sockets over (no gap), and this one
    # serves them to its own successor (proxy/handoff.py)
    handoff: Path | None = None
    handle_signals: bool = False  # SIGTERM/SIGINT stop, SIGHUP reloads (main thread only)
    drain_timeout: float = 30.0  # seconds a stop waits for requests in flight
    access_log: bool = False
    fast_lane: bool = True  # False: every request and answer the general way (tests)
    # the admin listener: the token (default: $LBREC_ADMIN_TOKEN), an embedder's routes and
    # metrics (lbrec up's)
    admin_token: str | None = None
    admin_routes: Sequence[web.RouteDef] = ()
    admin_collectors: Sequence[Collector] = ()
    # --workers N: a worker without the admin listener publishes its counters in
    # figures_dir, and the admin one reads them, so /metrics covers every worker
    worker: int = 0
    workers: int = 1  # how many: each worker's rate limits are 1/N (docs/routes.md)
    figures_dir: Path | None = None
    # (project, desired-state file): serve only a pool stamped as that deployment's ("deploy"
    # in backends.json); until one is written, every request is answered 503 with the reason
    deployment: tuple[str, str] | None = None
    control_socket: Path | None = None  # lbrec up's Unix socket (proxy/control.py)


async def serve(  # noqa: PLR0915  the proxy's composition root: one start-up order
    config_path: str | Path,
    options: ServeOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[ServeInfo], None] | None = None,
) -> None:
    """Run the proxy until ``stop`` is set (or the task is cancelled), then drain and return.

    ``ready`` is called once both listeners are bound. Raises
    :class:`proxy.config.ConfigError` when the file is invalid at start (without
    ``options.deployment``) or the admin listener would be open without a token.
    """
    o = options or ServeOptions()
    path = Path(config_path)
    check = None if o.deployment is None else _deployment_check(path, *o.deployment)
    config, digest, waiting = _initial_pool(path, check)
    stop = stop or asyncio.Event()
    listen_at, admin_at, token = _addresses(o, config)
    server = ProxyServer(
        config,
        digest=digest,
        access_log=o.access_log,
        fast_lane=o.fast_lane,
        config_dir=path.parent,  # certificates and ACME challenges: from the file's folder
        workers=o.workers,
    )
    if waiting is not None:
        server.empty_reason = waiting
        _log.warning("%s", waiting, extra={"event": "no_pool_yet"})
    admin_routes, admin_collectors = o.admin_routes, o.admin_collectors
    link = ControlLink(o.control_socket) if o.control_socket is not None else None
    if link is not None:
        admin_routes = [*admin_routes, *link.routes()]
        admin_collectors = [*admin_collectors, link]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        auto_decompress=False,
    )

    def accept(candidate: BackendsConfig) -> None:
        if check is not None:
            check(candidate)
            server.empty_reason = "no backends configured"

    watcher = ConfigWatcher(path, server, digest=digest, check=accept if check else None)
    loop = asyncio.get_running_loop()
    listeners = Listeners(handoff=o.handoff, traffic=o.listen_sock, admin=o.admin_sock)
    # lbrec up's TLS listener: kept until the file's tls.listen says to serve it (at start, or
    # at the reload that brings tls:, frontdoor.follow_listen)
    server.tls_held, server.tls_inherited = o.tls_held, o.tls_sock
    site: AdminSite | None = None
    signals = Signals(loop)
    publisher: FiguresPublisher | None = None
    try:
        monitor = HealthMonitor(
            session=session,
            sink=server,
            settings=config.health,
            on_result=server.record_probe,
        )
        server.attach_health(monitor)
        listeners.open(listen_at, admin_at, reuse_port=o.reuse_port)
        assert listeners.traffic is not None
        bound = await server.start(listeners.traffic)
        tls_bound: tuple[str, int] | None = None
        if config.tls is not None:  # later, a reload's tls.listen: frontdoor.follow_listen
            taken = listeners.take_tls()
            if taken is None and o.tls_held:
                taken, server.tls_inherited = server.tls_inherited, None
            tls_bound = await _open_tls(server, config.tls.listen, taken, held=o.tls_held)
        admin_bound: tuple[str, int] | None = None
        if listeners.admin is not None:
            app = make_admin_app(
                server,
                extra_routes=admin_routes,
                token=token,
                figures_dir=o.figures_dir,
                collectors=admin_collectors,
                refresh=[link.refresh] if link is not None else [],
            )
            site = AdminSite(app, listeners.admin)
            admin_bound = await site.start()
        watcher.start()
        if o.figures_dir is not None and listeners.admin is None:
            publisher = FiguresPublisher(server, o.figures_dir, o.worker)
            publisher.start()

        def taken_over() -> None:  # in the handoff thread: a successor serves now
            loop.call_soon_threadsafe(stop.set)

        # and the previous proxy stops accepting, drains; a successor gets the TLS listener
        # as it is served then (a reload may have opened or moved it)
        listeners.serving(taken_over, tls=server.tls_listening_fd)
        if o.handle_signals:
            signals.install(stop=stop.set, reload=lambda: watcher.notify(force=True))
        runtime = server.runtime
        _log.info(
            "proxy %s listening on %s:%d%s, admin on %s (event loop %s, parser %s, %s)",
            runtime["lbrec"],
            *bound,
            f", TLS on {tls_bound[0]}:{tls_bound[1]}" if tls_bound else "",
            f"{admin_bound[0]}:{admin_bound[1]}" if admin_bound else "-",
            runtime["event_loop"],
            runtime["parser"],
            runtime["code"],
            extra={"event": "start", "listen": f"{bound[0]}:{bound[1]}", **runtime},
        )
        if ready is not None:
            ready(ServeInfo(listen=bound, admin=admin_bound, server=server, tls=tls_bound))
        await stop.wait()
        _log.info("stopping: draining in-flight requests", extra={"event": "stopping"})
    finally:
        listeners.close()
        signals.close()
        await watcher.close()
        await asyncio.shield(server.shutdown(drain_timeout=o.drain_timeout))
        if publisher is not None:
            await publisher.close()
        if site is not None:
            await site.close()
        if link is not None:
            await link.close()
        await session.close()
        _log.info("proxy stopped", extra={"event": "stopped"})


async def _open_tls(
    server: ProxyServer, hostport: str, taken: socket.socket | None, *, held: bool = False
) -> tuple[str, int] | None:
    """Serve ``tls.listen``: on the predecessor's TLS listener when it was handed over
    (``--handoff``: one accept queue, no connection refused or reset in between), or on the
    supervisor's (``held``), when it listens where the file says; else on a socket bound here,
    but never when the supervisor holds the TLS listener (it moves it: None)."""
    if taken is not None:
        if listens_at(taken, parse_hostport(hostport)):
            return await frontdoor.serve_tls(server, taken, hostport)
        taken.close()  # the file moved tls.listen meanwhile: bind the new address
    if held:
        _log.warning(
            "tls.listen %s: not bound here; the supervisor (lbrec up) moves the TLS listener",
            hostport,
            extra={"event": "tls_listen_held", "listen": hostport},
        )
        return None
    return await frontdoor.listen_tls(server, hostport)


def _initial_pool(
    path: Path, check: Callable[[BackendsConfig], None] | None
) -> tuple[BackendsConfig, str, str | None]:
    """The pool to start with, its digest, and why it is empty when it waits for lbrec up's
    first pass (``check``: a deployment's; without one, an invalid file raises)."""
    try:
        config, digest = read_config(path)
        if check is not None:
            check(config)
    except ConfigError as err:
        if check is None:
            raise
        why = f"no pool yet: waiting for lbrec up's first pass ({str(err).splitlines()[0]})"
        return BackendsConfig(), "", why
    return config, digest, None


def _addresses(
    o: ServeOptions, config: BackendsConfig
) -> tuple[tuple[str, int], tuple[str, int] | None, str]:
    """Where to listen (traffic, admin or None) and the admin token; a ConfigError for an
    admin listener off loopback without a token."""
    if o.listen_sock is not None:
        listen_at = sockname(o.listen_sock)
        admin_at = sockname(o.admin_sock) if o.admin_sock is not None else None
    else:
        listen_at = _address(o.listen, config.listen)
        admin_at = _address(o.admin, config.admin) if o.enable_admin else None
    token = os.environ.get(ADMIN_TOKEN_ENV, "") if o.admin_token is None else o.admin_token
    if admin_at is not None and not token and not _is_loopback(admin_at[0]):
        raise ConfigError(
            f"admin listener {admin_at[0]}:{admin_at[1]} is not on a loopback address: "
            f"set {ADMIN_TOKEN_ENV} so that it requires a token, or bind it to 127.0.0.1"
        )
    return listen_at, admin_at, token


def _deployment_check(path: Path, project: str, file: str) -> Callable[[BackendsConfig], None]:
    """Raises ConfigError for a pool that is not ``project``'s from ``file`` (lbrec up)."""

    def check(config: BackendsConfig) -> None:
        stamp = config.deploy
        if stamp is None:
            raise ConfigError(f"{path} was not written by a pass for {file}: not served")
        if (stamp.project, stamp.file) != (project, file):
            raise ConfigError(
                f"{path} is the pool of project {stamp.project} from {stamp.file}, "
                f"not of {project} from {file}: not served"
            )

    return check


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(value: str | tuple[str, int] | None, default: str) -> tuple[str, int]:
    if value is None:
        return parse_hostport(default)
    if isinstance(value, tuple):
        return value
    return parse_hostport(value)
