"""The in-memory proxy harness: a real ProxyServer, ClientConnection and Exchange with their
transports in memory (no socket, no system call, no other process).

One copy, for the tests that drive the data path byte by byte (tests/proxy/
test_fastlane_stream.py) and for bench/hotpath.py, which imports it: what the harness does per
request is then the same in both. No monkeypatching: it runs on the wheel, compiled, too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.downstream import ClientConnection
from lbrec.proxy.server import ProxyServer
from lbrec.proxy.upstream import UpstreamConnection

__all__ = ["CountingTransport", "MemoryTransport", "memory_client"]


class MemoryTransport:
    """What the data path asks of a transport, in memory: every byte written is kept."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written = bytearray()
        self.writes = 0
        self.last = b""
        self.closed = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class CountingTransport(MemoryTransport):
    """The same, keeping only the last write and the count (a benchmark's loop)."""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data


def memory_client(
    loop: asyncio.AbstractEventLoop,
    backends: dict[str, int],
    *,
    idle: int = 1,
    fast_lane: bool = True,
    record: bool = True,
    client: tuple[str, int] = ("192.0.2.1", 40000),
) -> ClientConnection:
    """A client connection of a real ProxyServer whose backends (name -> weight, at
    127.0.0.1:28301 and on) each hold ``idle`` keep-alive connections in memory, idle in
    their pool. Drive it with ``data_received``; answer for a backend through
    ``client.active.upstream.data_received``. ``record=False``: the transports keep only
    their last write (:class:`CountingTransport`)."""
    config = BackendsConfig.model_validate(
        {
            "health": {"interval": 600},
            "backends": [
                {"name": name, "url": f"http://127.0.0.1:{28301 + i}", "weight": weight}
                for i, (name, weight) in enumerate(backends.items())
            ],
        }
    )

    async def make() -> ProxyServer:
        return ProxyServer(config, fast_lane=fast_lane)

    server = loop.run_until_complete(make())
    transport = MemoryTransport if record else CountingTransport
    for backend in server.pool.backends.values():
        for _ in range(idle):
            upstream = UpstreamConnection(backend.conns)
            peer = (backend.conns.host, backend.conns.port)
            upstream.connection_made(transport(peer))  # type: ignore[arg-type]
            backend.conns.release(upstream, 0.0)
    conn = ClientConnection(server)
    conn.connection_made(transport(client))  # type: ignore[arg-type]
    return conn
