"""The WebSocket tunnel: after a backend's ``101 Switching Protocols``, bytes both ways.

An exchange whose request asks for an upgrade makes a :class:`Tunnel` at once: the client
connection hands it whatever the client sends after the handshake, which is held (bounded)
until the backend answers. On ``101`` the exchange :meth:`~Tunnel.open`\\ s it: the held bytes
go to the backend, and from then on each side's bytes go straight to the other's transport
(:class:`~proxy.upstream.UpstreamConnection` writes to the client's itself); the tunnel keeps
only the flow control, pausing one side while the other is slow. Either side closing closes
both. Any other answer ends the exchange as usual and the client connection is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .body import REPLAY_LIMIT

if TYPE_CHECKING:
    from .contracts import Downstream
    from .upstream import UpstreamConnection

__all__ = ["Tunnel"]


class Tunnel:
    """One upgraded connection, client to backend; the upstream's listener once open."""

    __slots__ = ("client", "held", "on_close", "pending", "upstream")

    def __init__(self, client: Downstream) -> None:
        self.client = client
        self.pending: list[bytes] | None = []  # the client's bytes until the backend's 101
        self.held = 0
        self.upstream: UpstreamConnection | None = None  # set by open()
        # called once when the tunnel ends (a route's concurrency slot: proxy/admission.py)
        self.on_close: Callable[[], None] | None = None

    def from_client(self, data: bytes) -> None:
        pending = self.pending
        if pending is not None:
            # Sent after the handshake, before the backend's 101: held, but not without bound
            # (past REPLAY_LIMIT the client is not read until the tunnel opens).
            pending.append(data)
            self.held += len(data)
            if self.held > REPLAY_LIMIT:
                self.client.pause_reading_for_body(True)
        elif self.upstream is not None:
            self.upstream.write(data)

    def open(self, upstream: UpstreamConnection, rest: bytes) -> None:
        """The backend answered 101 (its head already relayed); ``rest``: its bytes after it."""
        client_transport = self.client.start_tunnel(self)
        self.upstream = upstream
        upstream.listener = self  # for flow control only: its bytes go straight to the client
        upstream.tunnel = client_transport
        if rest:
            client_transport.write(rest)
        pending = self.pending or []
        self.pending = None
        for data in pending:
            upstream.write(data)

    def client_lost(self) -> None:
        """The client connection is gone: the end of the tunnel, whichever side closed it (a
        backend closing closes the client's transport, which ends here too)."""
        if self.upstream is not None:
            self.upstream.close()
        on_close = self.on_close
        if on_close is not None:
            self.on_close = None
            on_close()

    def client_pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading(True)

    def client_resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading(False)

    # -- UpstreamListener: the backend side ----------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        pass  # never called: an upstream connection with a tunnel writes to it first

    def upstream_lost(self, exc: Exception | None) -> None:
        pass  # the upstream connection closes the client's transport itself

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading_for_upstream(True)

    def upstream_resume_writing(self) -> None:
        self.client.pause_reading_for_upstream(False)
