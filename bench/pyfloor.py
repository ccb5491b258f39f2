"""The floor of any Python reverse proxy on uvloop: a byte relay that does nothing per request.

Not a proxy anyone should run: it parses nothing, checks nothing, balances nothing. Each
client connection gets its own backend connection (to the backends in turn, so the weights
are ignored) and every byte read on one side is written to the other. Per request that is
the least a Python data path can do: two Python callbacks (one per direction) and two
``transport.write`` calls, on uvloop. Its CPU per request is what the interpreter and the
event loop cost before a proxy does any work; ``bench/proxy_bench.py --only pyfloor,nginx``
puts it beside nginx (docs/benchmarks.md, "The floor of a Python data path").

    python bench/pyfloor.py --listen 127.0.0.1:PORT --backend 127.0.0.1:P1 [--backend ...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from collections.abc import Iterator

import uvloop


class Upstream(asyncio.Protocol):
    __slots__ = ("client", "transport")

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    __slots__ = ("backends", "backlog", "transport", "upstream")

    def __init__(self, backends: Iterator[tuple[str, int]]) -> None:
        self.backends = backends
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.backlog: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        host, port = next(self.backends)
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: Upstream(self.transport), host, port)  # type: ignore[arg-type]
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream
        if self.backlog:
            upstream.write(b"".join(self.backlog))
            self.backlog = []

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            self.backlog.append(data)
        else:
            upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    loop = asyncio.get_running_loop()
    turn = itertools.cycle(backends)
    server = await loop.create_server(lambda: Client(turn), *listen, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=_addr)
    parser.add_argument("--backend", action="append", required=True, type=_addr)
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.backend))


if __name__ == "__main__":
    main()
