"""Raw keep-alive HTTP/1.1 connections to one backend, and the per-backend idle pool.

An :class:`UpstreamConnection` is a bare asyncio Protocol: it hands every received byte to
its current listener (the request being forwarded), or to the client transport once the
connection has been upgraded into a tunnel (WebSocket). It never parses: the listener owns a
fresh response parser per attempt.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

__all__ = ["ConnectionPool", "UpstreamConnection", "UpstreamListener"]


class UpstreamListener(Protocol):
    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self, exc: Exception | None) -> None: ...

    def upstream_pause_writing(self) -> None: ...

    def upstream_resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("closed", "idle_since", "listener", "pool", "transport", "tunnel")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.listener: UpstreamListener | None = None
        self.tunnel: asyncio.BaseTransport | None = None
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.pool.opened += 1

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)  # type: ignore[attr-defined]
            return
        listener = self.listener
        if listener is None:  # unsolicited bytes on an idle connection: not reusable
            self.close()
            return
        listener.upstream_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.opened -= 1
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        listener = self.listener
        if listener is not None:
            self.listener = None
            listener.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_resume_writing()

    # -- helpers -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def pause_reading(self, pause: bool) -> None:
        """Flow control: stop (or resume) reading the backend while the client is slow."""
        transport = self.transport
        if transport is not None and not self.closed:
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def close(self) -> None:
        self.listener = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.listener = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class ConnectionPool:
    """Idle keep-alive connections to one ``host:port`` (LIFO, bounded)."""

    __slots__ = ("closed", "host", "idle", "max_idle", "opened", "port")

    def __init__(self, host: str, port: int, *, max_idle: int = 1024) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []
        self.opened = 0  # live connections (idle + busy)
        self.closed = False

    def take(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, connect_timeout: float) -> UpstreamConnection:
        """A fresh connection; OSError/TimeoutError when the backend cannot be reached."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: UpstreamConnection(self), self.host, self.port
            )
        return protocol

    def release(self, conn: UpstreamConnection, now: float) -> None:
        conn.listener = None
        if self.closed or conn.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    def close_idle(self, *, idle_before: float | None = None) -> None:
        """Close idle connections (all, or those idle since before ``idle_before``)."""
        keep: list[UpstreamConnection] = []
        for conn in self.idle:
            if idle_before is None or conn.idle_since < idle_before:
                conn.close()
            elif not conn.closed:
                keep.append(conn)
        self.idle = keep

    def close(self) -> None:
        """Drain: no more pooling; busy connections close when their request ends."""
        self.closed = True
        self.close_idle()
