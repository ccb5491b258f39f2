"""The CPU cost of each route feature (issue 23) per request, without sockets, in one run.

The same in-memory harness as bench/hotpath.py (tests/proxy/memory.py's transports, the real
``ProxyServer``, ``ClientConnection`` and ``Exchange``): each case is the plain pool with one
top-level feature on (``defaults``), measured beside the same pool without any, in the same
process, alternating, so the ratio holds on a busy machine where absolute figures do not.
Basic auth and forward-auth are left out: they wait (a thread, a service) and are measured by
what they wait for, not by the proxy's CPU.

    .venv/bin/python bench/features_bench.py [--only "compress br" ...]

Under valgrind (``--tool=cachegrind --cache-sim=no``), two runs of one case with different
``--requests`` give its instructions per request, which a shared machine does not disturb.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.downstream import ClientConnection
from lbrec.proxy.server import ProxyServer, code_kind
from lbrec.proxy.upstream import UpstreamConnection
from tests.proxy.memory import CountingTransport

REQUEST = (
    b"GET /app.js HTTP/1.1\r\nHost: shop.example.com\r\n"
    b"Accept-Encoding: gzip, br, zstd\r\nCookie: theme=dark\r\n\r\n"
)
TEXT = b"function lbrec(){return 'compresses text answers';}\n" * 160  # 8 KiB of JavaScript
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/javascript\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(TEXT), TEXT)
)
CASES: dict[str, dict[str, Any]] = {
    "none": {},
    "max_body": {"max_body": "10m"},
    "allow-list": {"auth": {"allow": ["127.0.0.0/8", "10.0.0.0/8"]}},
    "rate_limit": {"rate_limit": {"requests": 1_000_000, "per": 1}},
    "rate_limit+concurrency": {"rate_limit": {"requests": 1_000_000, "concurrency": 10}},
    "sticky cookie, new client": {"sticky": "cookie:lb"},
    "sticky cookie, pinned": {"sticky": "cookie:lb"},
    "compress gzip": {"compress": {"codings": ["gzip"]}},
    "compress br": {"compress": {"codings": ["br"]}},
    "compress zstd": {"compress": {"codings": ["zstd"]}},
}


def build(loop: asyncio.AbstractEventLoop, defaults: dict[str, Any]) -> ClientConnection:
    doc: dict[str, Any] = {
        "health": {"interval": 600},
        "backends": [
            {"name": "b1", "url": "http://127.0.0.1:28301", "weight": 2},
            {"name": "b2", "url": "http://127.0.0.1:28302", "weight": 3},
        ],
    }
    if defaults:
        doc["defaults"] = defaults
    config = BackendsConfig.model_validate(doc)

    async def make() -> ProxyServer:
        return ProxyServer(config)

    server = loop.run_until_complete(make())
    for backend in server.pool.backends.values():
        upstream = UpstreamConnection(backend.conns)
        upstream.connection_made(CountingTransport((backend.conns.host, 1)))  # type: ignore[arg-type]
        backend.conns.release(upstream, 0.0)
    conn = ClientConnection(server)
    conn.connection_made(CountingTransport(("127.0.0.1", 40000)))  # type: ignore[arg-type]
    return conn


def pinned(client: ClientConnection) -> bytes:
    """The request of a client that holds its pinning cookie (from a first answer)."""
    run(client, 1)
    transport = client.transport
    assert isinstance(transport, CountingTransport)
    value = transport.last.split(b"Set-Cookie: lb=", 1)[1].split(b";", 1)[0]
    return REQUEST.replace(b"Cookie: theme=dark", b"Cookie: theme=dark; lb=" + value)


def run(client: ClientConnection, n: int, request: bytes = REQUEST) -> float:
    start = time.perf_counter()
    for _ in range(n):
        client.data_received(request)
        active = client.active
        assert active is not None and active.upstream is not None, "not admitted"
        active.upstream.data_received(ANSWER)
    elapsed = time.perf_counter() - start
    if client.active is not None:
        raise SystemExit("the answer did not end")
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", action="append", choices=CASES, help="these cases (and none)")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    cases = {n: d for n, d in CASES.items() if not args.only or n in args.only or n == "none"}
    clients = {name: build(loop, defaults) for name, defaults in cases.items()}
    requests = {name: REQUEST for name in cases}
    if "sticky cookie, pinned" in clients:
        requests["sticky cookie, pinned"] = pinned(clients["sticky cookie, pinned"])
    for name, client in clients.items():
        run(client, 500, requests[name])  # warm up
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):  # alternating: the machine's noise falls on every case alike
        for name, client in clients.items():
            figures[name].append(run(client, args.requests, requests[name]))
    base = min(figures["none"])
    print(
        f"per request, {code_kind()}, 8 KiB JavaScript answer, min of {args.repeat} x "
        f"{args.requests} (median in brackets)"
    )
    for name, values in figures.items():
        best = min(values)
        print(
            f"  {name:26s} {best:7.2f} us  ({statistics.median(values):7.2f})  "
            f"x{best / base:.2f}  +{best - base:.2f} us"
        )


if __name__ == "__main__":
    main()
