"""EDGE. The sockets of ``lbrec up``'s data plane: its listeners, bound once and held across
proxy restarts, compared with the pool's wish to know whether one moved, and the Unix socket
paths of its handoff and control sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
from pathlib import Path

from ...proxy.config import parse_hostport
from ...proxy.server import listening_socket
from ..adapters.files import state_dir
from ..core.errors import PortInUse

__all__ = ["address_of", "bind_listener", "same_address", "socket_path"]

_MAX_UNIX_PATH = 100  # sun_path holds 108 bytes


def socket_path(folder: Path, name: str) -> Path:
    """``folder/.lbrec/name``; when that is too long for a Unix socket, a 0700 folder of this
    user's under the temp dir named after the deploy folder (found again by the next up)."""
    path = state_dir(folder) / name
    if len(os.fsencode(path)) <= _MAX_UNIX_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(folder.resolve())).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"lbrec-{os.getuid()}-{digest}"
    with contextlib.suppress(FileExistsError):
        short.mkdir(mode=0o700)
    info = short.lstat()
    if short.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PortInUse(f"{short}: not a private folder of this user; not using it")
    return short / name


def address_of(sock: socket.socket) -> tuple[str, int]:
    addr = sock.getsockname()
    return str(addr[0]), int(addr[1])


def bind_listener(role: str, hostport: str, *, reuse: bool = False) -> socket.socket:
    try:
        return listening_socket(*parse_hostport(hostport), reuse_port=reuse)
    except OSError as err:
        raise PortInUse(
            f"{role}: {hostport} cannot be bound ({err.strerror or err}): nothing was changed",
            hint="is another program listening there? (a `lbrec up` of this folder is taken "
            "over, not refused)",
        ) from err


def same_address(sock: socket.socket, hostport: str) -> bool:
    host, port = parse_hostport(hostport)
    bound_host, bound_port = address_of(sock)
    if port != bound_port:
        return False
    if host == bound_host or {host, bound_host} <= {"::", "0.0.0.0"}:
        return True
    try:  # a name (localhost) and the address it was bound as are one listener
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return any(info[4][0] == bound_host for info in infos)
