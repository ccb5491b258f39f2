"""EDGE. One deadline for a whole HTTP exchange: name resolution on a helper thread, and
sockets (plain and TLS) whose every blocking operation gets only the time left, so a server
trickling one byte a second cannot hold the caller past it (``http_client.py`` uses them).
"""

from __future__ import annotations

import math
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .http_errors import ConnectFailed, why

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["DeadlineSocket", "DeadlineTLSSocket", "resolve"]


_Address = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def resolve(method: str, url: str, host: str, port: int, deadline: float) -> Sequence[_Address]:
    """getaddrinfo within the deadline: an address literal at once, a name on a helper thread
    (the resolver call itself cannot be interrupted; a late answer is dropped)."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name, not an address
    box: list[Sequence[_Address] | OSError] = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as err:
            box.append(err)

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if not box:
        raise TimeoutError(f"resolving {host}")
    found = box[0]
    if isinstance(found, OSError):
        raise ConnectFailed(method, url, f"cannot resolve {host}: {why(found)}")
    if not found:
        raise ConnectFailed(method, url, f"no address for {host}")
    return found


def _time_left(deadline: float) -> float:
    """Seconds until ``deadline``; TimeoutError when it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class DeadlineSocket(socket.socket):
    """A socket whose every blocking operation gets only the time left before ``deadline``
    (http.client reads through ``recv_into``, writes through ``sendall``)."""

    deadline: float = math.inf

    def arm(self) -> None:
        self.settimeout(_time_left(self.deadline))

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self.arm()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.arm()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        self.arm()
        return super().send(data, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self.arm()  # since Python 3.5 a sendall's timeout is for the whole of it
        super().sendall(data, flags)


class DeadlineTLSSocket(ssl.SSLSocket):
    """The same for TLS (its ``sendall`` loops over ``send``)."""

    deadline: float = math.inf

    def arm(self) -> None:
        self.settimeout(_time_left(self.deadline))

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.arm()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.arm()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self.arm()
        return super().send(data, flags)
