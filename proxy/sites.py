"""Where the proxy listens, apart from what it serves (aiohttp's ``web_runner``: sites and a
runner): the listening sockets, the admin site, the process signals. :func:`proxy.app.serve`
composes them; each owns what it opens and closes it (``close``), so the order of a start and
of a stop is written once, in ``serve``. A TLS listener is one more kind of site.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .handoff import HandoffServer, Taken, take_over
from .server import listening_socket

__all__ = ["AdminSite", "Listeners", "Signals", "sockname"]

Address = tuple[str, int]


def sockname(sock: socket.socket) -> Address:
    addr = sock.getsockname()
    return str(addr[0]), int(addr[1])


class Listeners:
    """The proxy's listening sockets, traffic and admin: the caller's (``lbrec up`` holds them
    across a restart of this process), a predecessor's (``handoff``: taken over, one accept
    queue, no gap) or bound here; with ``handoff``, served in turn to a successor."""

    __slots__ = ("_successor", "_taken", "admin", "handoff", "traffic")

    def __init__(
        self,
        *,
        handoff: Path | None = None,
        traffic: socket.socket | None = None,
        admin: socket.socket | None = None,
    ) -> None:
        self.handoff = handoff
        self.traffic = traffic
        self.admin = admin
        self._taken: Taken | None = None
        self._successor: HandoffServer | None = None

    def open(self, listen_at: Address, admin_at: Address | None, *, reuse_port: bool) -> None:
        """Have both sockets (``admin_at`` None: no admin listener)."""
        if self.traffic is not None:
            return  # bound by the caller: nothing is bound or taken over here
        taken = self._taken = take_over(self.handoff) if self.handoff is not None else None
        if taken is not None:
            self.traffic = taken.sockets[0]
            self.admin = taken.sockets[1] if len(taken.sockets) > 1 else None
            if admin_at is None and self.admin is not None:
                self.admin.close()
                self.admin = None
            elif admin_at is not None and self.admin is None:
                self.admin = listening_socket(*admin_at, reuse_port=reuse_port)
            return
        self.traffic = listening_socket(*listen_at, reuse_port=reuse_port)
        if admin_at is not None:
            self.admin = listening_socket(*admin_at, reuse_port=reuse_port)

    def serving(self, taken_over: Callable[[], None]) -> None:
        """This proxy serves: its predecessor may stop accepting and drain; a successor may
        take the sockets over (then ``taken_over`` runs, in the handoff thread)."""
        if self._taken is not None:
            self._taken.ready()
        if self.handoff is not None and self.traffic is not None:
            handed = [self.traffic] + ([self.admin] if self.admin is not None else [])
            self._successor = HandoffServer(self.handoff, handed, taken_over)
            self._successor.start()

    def close(self) -> None:
        if self._successor is not None:
            self._successor.close()
            self._successor = None


class AdminSite:
    """The admin listener: an aiohttp application on a listening socket."""

    __slots__ = ("_runner", "app", "sock")

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self.app = app
        self.sock = sock
        self._runner: web.AppRunner | None = None

    async def start(self) -> Address:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()
        return sockname(self.sock)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Signals:
    """SIGTERM and SIGINT stop, SIGHUP reloads; only for the main thread's loop."""

    __slots__ = ("_installed", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._installed: list[signal.Signals] = []

    def install(self, *, stop: Callable[[], None], reload: Callable[[], None]) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, stop)
            self._installed.append(sig)
        self._loop.add_signal_handler(signal.SIGHUP, reload)
        self._installed.append(signal.SIGHUP)

    def close(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed = []
