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
    queue, no gap) or bound here; with ``handoff``, served in turn to a successor, with the
    TLS listener's socket as it is served at that moment."""

    __slots__ = ("_successor", "_taken", "admin", "handoff", "tls", "traffic")

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
        self.tls: socket.socket | None = None  # the predecessor's TLS listener, taken over
        self._taken: Taken | None = None
        self._successor: HandoffServer | None = None

    def open(self, listen_at: Address, admin_at: Address | None, *, reuse_port: bool) -> None:
        """Have both sockets (``admin_at`` None: no admin listener)."""
        if self.traffic is not None:
            return  # bound by the caller: nothing is bound or taken over here
        taken = None
        if self.handoff is not None:
            taken = self._taken = take_over(self.handoff, tls=True)
        if taken is not None:
            traffic = taken.role("traffic")
            if traffic is None:
                for sock in taken.sockets:
                    sock.close()
                raise OSError(f"{self.handoff}: the running proxy handed no traffic listener")
            self.traffic, self.admin, self.tls = traffic, taken.role("admin"), taken.role("tls")
            if admin_at is None and self.admin is not None:
                self.admin.close()
                self.admin = None
            elif admin_at is not None and self.admin is None:
                self.admin = listening_socket(*admin_at, reuse_port=reuse_port)
            return
        self.traffic = listening_socket(*listen_at, reuse_port=reuse_port)
        if admin_at is not None:
            self.admin = listening_socket(*admin_at, reuse_port=reuse_port)

    def take_tls(self) -> socket.socket | None:
        """The TLS listener taken over from the predecessor (once: then the caller's)."""
        sock, self.tls = self.tls, None
        return sock

    def serving(
        self, taken_over: Callable[[], None], *, tls: Callable[[], int | None] = lambda: None
    ) -> None:
        """This proxy serves: its predecessor may stop accepting and drain; a successor may
        take the sockets over (then ``taken_over`` runs, in the handoff thread). ``tls``: the
        TLS listener's descriptor when a successor asks (None: none is served then)."""
        if self.tls is not None:  # taken over, but the file has no tls: (any more)
            self.tls.close()
            self.tls = None
        if self._taken is not None:
            self._taken.ready()
        if self.handoff is not None and self.traffic is not None:
            traffic, admin = self.traffic, self.admin

            def handed() -> list[tuple[str, int]]:
                out = [("traffic", traffic.fileno())]
                if admin is not None:
                    out.append(("admin", admin.fileno()))
                fd = tls()
                if fd is not None:
                    out.append(("tls", fd))
                return out

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
