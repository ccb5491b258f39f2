"""What a proxy process runs on: its listening sockets, its version, event loop and parser, and
whether its request path is compiled (the start line, ``--version`` and ``/-/pool`` say so)."""

from __future__ import annotations

import asyncio
import ipaddress
import platform
import socket

import httptools

__all__ = ["code_kind", "listening_socket", "listens_at", "package_version", "runtime_info"]


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening TCP socket (port 0 picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


def listens_at(sock: socket.socket, wanted: tuple[str, int]) -> bool:
    """Whether ``sock`` listens at ``wanted`` (port 0: any port; a name such as localhost: its
    address was resolved when it was bound)."""
    bound = sock.getsockname()
    host, port = wanted
    if port not in (0, int(bound[1])):
        return False
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(bound[0])
    except ValueError:
        return True


def package_version(name: str) -> str:
    """An installed distribution's version, or ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def code_kind() -> str:
    """``mypyc`` when the request path runs compiled (a wheel built where mypyc and a C
    compiler were at hand, see setup.py), else ``interpreted``."""
    from . import exchange

    return "interpreted" if exchange.__file__.endswith(".py") else "mypyc"


def runtime_info(loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """Which event loop, HTTP parser and code serve: shown at start and on ``/-/pool``."""
    module = type(loop).__module__.partition(".")[0]
    return {
        "lbrec": package_version("lbrec"),
        "event_loop": "uvloop" if module == "uvloop" else "asyncio",
        "parser": f"httptools {httptools.__version__} (llhttp)",
        "code": code_kind(),
        "python": platform.python_version(),
    }
