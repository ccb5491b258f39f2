"""Real HTTP servers on 127.0.0.1 (port 0) for the tests of the reconciler's outgoing calls:
one that answers as told, one that redirects, one that trickles, one with a huge body.

Each server runs its accept loop and one thread per connection; every loop is bounded in count
and in time, and a server stops (its threads end) when its ``with`` block ends."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "LocalServer",
    "Seen",
    "answering",
    "huge_body",
    "redirecting",
    "serve",
    "trickling",
]

# No test server lives longer than this, whatever the client does.
MAX_LIFE = 60.0
MAX_CONNECTIONS = 50


@dataclass
class Seen:
    """One request a server read: its head (request line and headers) and body."""

    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class LocalServer:
    port: int
    seen: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Handler = Callable[[socket.socket, Seen, LocalServer], None]


def _read_request(conn: socket.socket) -> Seen:
    """Read one request head and its Content-Length body (bounded, 5 s)."""
    conn.settimeout(5.0)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    seen = Seen(head=head, body=b"")
    length = int(seen.header("Content-Length") or 0)
    while len(rest) < min(length, 1 << 20):
        chunk = conn.recv(4096)
        if not chunk:
            break
        rest += chunk
    seen.body = rest[:length]
    return seen


@contextlib.contextmanager
def serve(handle: Handler) -> Iterator[LocalServer]:
    """Run ``handle(conn, request, server)`` for every connection to a fresh 127.0.0.1 port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    server = LocalServer(port=listener.getsockname()[1])
    workers: list[threading.Thread] = []

    def one(conn: socket.socket) -> None:
        with conn:
            try:
                seen = _read_request(conn)
                server.seen.append(seen)
                handle(conn, seen, server)
            except OSError:
                pass  # the client went away: what the tests do on purpose

    def accept_loop() -> None:
        end = time.monotonic() + MAX_LIFE
        while not server.stopping.is_set() and time.monotonic() < end:
            if len(workers) >= MAX_CONNECTIONS:
                break
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            worker = threading.Thread(target=one, args=(conn,), daemon=True)
            workers.append(worker)
            worker.start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        server.stopping.set()
        acceptor.join(5.0)
        listener.close()
        for worker in workers:
            worker.join(5.0)


def answering(
    status: int = 200,
    body: bytes = b"ok",
    headers: tuple[tuple[str, str], ...] = (),
) -> contextlib.AbstractContextManager[LocalServer]:
    """A server answering every request with ``status`` and ``body``."""

    def handle(conn: socket.socket, _: Seen, __: LocalServer) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return serve(handle)


def redirecting(location: str, status: int = 302) -> contextlib.AbstractContextManager[LocalServer]:
    """A server answering every request with a redirect to ``location``."""
    return answering(status, b"", (("Location", location),))


def trickling(
    *, head_first: bool, interval: float = 0.2
) -> contextlib.AbstractContextManager[LocalServer]:
    """A server that sends its answer one byte every ``interval`` s (for at most MAX_LIFE):
    the whole answer (``head_first=False``) or, after a prompt head, its body."""
    body = b"x" * 1000
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def handle(conn: socket.socket, _: Seen, server: LocalServer) -> None:
        slow = head + body
        if head_first:
            conn.sendall(head)
            slow = body
        end = time.monotonic() + MAX_LIFE
        for byte in slow:
            if server.stopping.is_set() or time.monotonic() > end:
                return
            conn.sendall(bytes([byte]))
            time.sleep(interval)

    return serve(handle)


def huge_body(
    *, chunked: bool = False, size: int = 1 << 30
) -> contextlib.AbstractContextManager[LocalServer]:
    """A server answering 200 with a ``size``-byte body, sent as fast as the client takes it,
    until it stops reading (the socket errs) or MAX_LIFE passes."""

    def handle(conn: socket.socket, _: Seen, server: LocalServer) -> None:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        conn.sendall(f"HTTP/1.1 200 OK\r\n{framing}\r\n\r\n".encode())
        block = b"y" * 65536
        if chunked:
            block = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        end = time.monotonic() + MAX_LIFE
        sent = 0
        conn.settimeout(2.0)
        while sent < size and not server.stopping.is_set() and time.monotonic() < end:
            conn.sendall(block)
            sent += 65536

    return serve(handle)
