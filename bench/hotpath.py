"""The proxy's own CPU per request, without sockets: the Python work of the data path alone.

Drives the real ``ProxyServer``, ``ClientConnection``, ``Exchange`` and ``UpstreamConnection``
with in-memory transports (the tests' harness, tests/proxy/memory.py): each iteration hands one
request to the client connection as ``data_received`` would, then the backend's answer to the
upstream connection, and checks the client got the answer. No system call, no event-loop
wakeup, no other process: what is left is exactly what the interpreter spends per request in
lbrec's code (plus httptools), so the figure is steady from run to run where wrk's are not.
bench/proxy_bench.py measures the rest.

    .venv/bin/python bench/hotpath.py                  # wrk's request, nginx's answer
    .venv/bin/python bench/hotpath.py --browser        # a browser-like request (9 headers)
    .venv/bin/python bench/hotpath.py --general        # without the fast lane
    .venv/bin/python bench/hotpath.py --profile        # cProfile of the same loop
    PYTHONPATH=<wheel installed with --target> .venv/bin/python -P bench/hotpath.py  # compiled
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

# Appended: a wheel's site folder on PYTHONPATH (its compiled modules) comes first.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from lbrec.proxy.downstream import ClientConnection
from lbrec.proxy.server import code_kind
from tests.proxy.memory import MemoryTransport, memory_client

WRK_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:28210\r\n\r\n"
BROWSER_REQUEST = (
    b"GET /static/app.js?v=12 HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://shop.example.com/\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"Connection: keep-alive\r\n"
    b"Sec-Fetch-Dest: script\r\n\r\n"
)
NGINX_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 23:15:26 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
    b"X-Backend: b1\r\n\r\nok"
)


def build(loop: asyncio.AbstractEventLoop, *, fast_lane: bool = True) -> ClientConnection:
    """The shared in-memory harness (tests/proxy/memory.py): two backends weighted 2:3."""
    return memory_client(
        loop,
        {"b1": 2, "b2": 3},
        fast_lane=fast_lane,
        record=False,
        client=("127.0.0.1", 40000),
    )


def run(client: ClientConnection, request: bytes, n: int) -> float:
    transport = client.transport
    assert isinstance(transport, MemoryTransport)
    # the upstream connection a request goes to is the one the exchange holds
    start = time.perf_counter()
    for _ in range(n):
        client.data_received(request)
        active = client.active
        assert active is not None and active.upstream is not None
        active.upstream.data_received(NGINX_ANSWER)
    elapsed = time.perf_counter() - start
    if not transport.last.endswith(b"\r\n\r\nok") or client.active is not None:
        raise SystemExit(f"the client did not get the answer: {transport.last!r}")
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--browser", action="store_true", help="a browser-like request")
    parser.add_argument("--general", action="store_true", help="without the fast lane")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    request = BROWSER_REQUEST if args.browser else WRK_REQUEST
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = build(loop, fast_lane=not args.general)
    run(client, request, 2000)  # warm up
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(client, request, args.requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    figures = [run(client, request, args.requests) for _ in range(args.repeat)]
    print(
        f"{'browser' if args.browser else 'wrk'} request, {code_kind()}"
        f"{', general path' if args.general else ''}: "
        f"{min(figures):.2f} us/request (min of {args.repeat} x {args.requests}; "
        f"median {statistics.median(figures):.2f})"
    )


if __name__ == "__main__":
    main()
