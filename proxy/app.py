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

from .admin import make_admin_app
from .config import BackendsConfig, ConfigError, parse_hostport
from .control import ControlLink
from .health import HealthMonitor
from .metrics import FiguresPublisher
from .reload import ConfigWatcher, read_config
from .server import ProxyServer
from .sites import AdminSite, Listeners, Signals, sockname

__all__ = ["ADMIN_TOKEN_ENV", "ServeInfo", "parse_hostport", "serve"]

ADMIN_TOKEN_ENV = "LBREC_ADMIN_TOKEN"

_log = logging.getLogger("lbrec.proxy")


@dataclass(frozen=True, slots=True)
class ServeInfo:
    """Where the proxy ended up listening (ports are real even when 0 was asked for)."""

    listen: tuple[str, int]
    admin: tuple[str, int] | None
    server: ProxyServer


async def serve(  # noqa: PLR0912, PLR0915  the proxy's composition root: one start-up order
    config_path: str | Path,
    *,
    listen: str | tuple[str, int] | None = None,
    admin: str | tuple[str, int] | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[ServeInfo], None] | None = None,
    access_log: bool = False,
    reuse_port: bool = False,
    enable_admin: bool = True,
    handle_signals: bool = False,
    drain_timeout: float = 30.0,
    admin_routes: Sequence[web.RouteDef] = (),
    admin_token: str | None = None,
    handoff: Path | None = None,
    admin_collectors: Sequence[Collector] = (),
    worker: int = 0,
    figures_dir: Path | None = None,
    listen_sock: socket.socket | None = None,
    admin_sock: socket.socket | None = None,
    deployment: tuple[str, str] | None = None,
    control_socket: Path | None = None,
    fast_lane: bool = True,
) -> None:
    """Run the proxy until ``stop`` is set (or the task is cancelled), then drain and return.

    ``listen``/``admin`` default to the ``listen``/``admin`` fields of backends.json.
    ``ready`` is called once both listeners are bound. ``handoff``: a Unix socket path; a
    proxy already serving there hands over its listening sockets (no gap), and this one serves
    them to its own successor (see :mod:`proxy.handoff`). ``handle_signals`` installs SIGTERM/
    SIGINT (graceful stop) and SIGHUP (reload) handlers; only for the main thread.
    ``worker``/``figures_dir`` (``--workers N``): a worker without the admin listener publishes
    its counters there and the admin one reads them, so /metrics covers every worker.
    ``admin_collectors``: more metrics on the admin listener (the reconciler's, under ``up``).
    ``listen_sock``/``admin_sock``: listening sockets bound by the caller (``lbrec up``, which
    holds them across a restart of this process); then nothing is bound or taken over here,
    and the admin listener runs only with ``admin_sock``. ``deployment`` (project, desired-state
    file): serve only a pool stamped as that deployment's (``deploy`` in backends.json); until
    one is written, the pool is empty and every request is answered 503 with the reason.
    ``control_socket``: ``lbrec up``'s Unix socket (see :mod:`proxy.control`).
    ``fast_lane=False``: every request and answer the general way (proxy/fastlane.py; tests).
    Raises :class:`proxy.config.ConfigError` when the file is invalid at start (without
    ``deployment``).
    """
    path = Path(config_path)
    waiting: str | None = None
    check = None if deployment is None else _deployment_check(path, *deployment)
    try:
        config, digest = read_config(path)
        if check is not None:
            check(config)
    except ConfigError as err:
        if deployment is None:
            raise
        config, digest = BackendsConfig(), ""
        waiting = f"no pool yet: waiting for lbrec up's first pass ({str(err).splitlines()[0]})"
    stop = stop or asyncio.Event()
    if listen_sock is not None:
        listen_at = sockname(listen_sock)
        admin_at = sockname(admin_sock) if admin_sock is not None else None
    else:
        listen_at = _address(listen, config.listen)
        admin_at = _address(admin, config.admin) if enable_admin else None
    token = os.environ.get(ADMIN_TOKEN_ENV, "") if admin_token is None else admin_token
    if admin_at is not None and not token and not _is_loopback(admin_at[0]):
        raise ConfigError(
            f"admin listener {admin_at[0]}:{admin_at[1]} is not on a loopback address: "
            f"set {ADMIN_TOKEN_ENV} so that it requires a token, or bind it to 127.0.0.1"
        )

    server = ProxyServer(config, digest=digest, access_log=access_log, fast_lane=fast_lane)
    if waiting is not None:
        server.empty_reason = waiting
        _log.warning("%s", waiting, extra={"event": "no_pool_yet"})
    link = ControlLink(control_socket) if control_socket is not None else None
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
    listeners = Listeners(handoff=handoff, traffic=listen_sock, admin=admin_sock)
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
        listeners.open(listen_at, admin_at, reuse_port=reuse_port)
        assert listeners.traffic is not None
        bound = await server.start(listeners.traffic)
        admin_bound: tuple[str, int] | None = None
        if listeners.admin is not None:
            app = make_admin_app(
                server,
                extra_routes=admin_routes,
                token=token,
                figures_dir=figures_dir,
                collectors=admin_collectors,
                refresh=[link.refresh] if link is not None else [],
            )
            site = AdminSite(app, listeners.admin)
            admin_bound = await site.start()
        watcher.start()
        if figures_dir is not None and listeners.admin is None:
            publisher = FiguresPublisher(server, figures_dir, worker)
            publisher.start()

        def taken_over() -> None:  # in the handoff thread: a successor serves now
            loop.call_soon_threadsafe(stop.set)

        listeners.serving(taken_over)  # and the previous proxy stops accepting, drains
        if handle_signals:
            signals.install(stop=stop.set, reload=lambda: watcher.notify(force=True))
        runtime = server.runtime
        _log.info(
            "proxy %s listening on %s:%d, admin on %s (event loop %s, parser %s, %s)",
            runtime["lbrec"],
            *bound,
            f"{admin_bound[0]}:{admin_bound[1]}" if admin_bound else "-",
            runtime["event_loop"],
            runtime["parser"],
            runtime["code"],
            extra={"event": "start", "listen": f"{bound[0]}:{bound[1]}", **runtime},
        )
        if ready is not None:
            ready(ServeInfo(listen=bound, admin=admin_bound, server=server))
        await stop.wait()
        _log.info("stopping: draining in-flight requests", extra={"event": "stopping"})
    finally:
        listeners.close()
        signals.close()
        await watcher.close()
        await asyncio.shield(server.shutdown(drain_timeout=drain_timeout))
        if publisher is not None:
            await publisher.close()
        if site is not None:
            await site.close()
        if link is not None:
            await link.close()
        await session.close()
        _log.info("proxy stopped", extra={"event": "stopped"})


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
