"""EDGE. The host's secret that keys sticky canaries (issue 20 finding 13).

``.lbrec/sticky.key``: 32 random bytes, made once per deploy folder (``0600`` in a ``0700``
folder), never read or written through a symbolic link. The reconciler derives each rollout's
key from it (:func:`reconciler.core.render.sticky_rollout_key`) and writes that key into
backends.json, so every worker of the proxy and every restart put a client on the same version,
while neither clients nor backends can compute which cookie value lands where.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..core.defaults import STATE_DIR
from ..core.errors import UsageError

__all__ = ["STICKY_SECRET_FILE", "host_sticky_secret"]

STICKY_SECRET_FILE = f"{STATE_DIR}/sticky.key"
_SIZE = 32
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def host_sticky_secret(folder: Path) -> bytes:
    """The secret of the deploy folder ``folder``, made on first use."""
    path = folder / STICKY_SECRET_FILE
    state = path.parent
    if state.is_symlink():
        raise UsageError(
            f"{state}: is a symbolic link; lbrec keeps its state there and never through a link",
            hint=f"remove {state}; lbrec recreates it",
        )
    state.mkdir(mode=0o700, exist_ok=True)
    data = _read(path)
    if data is None:
        _create(path)
        data = _read(path)
    if data is None or len(data) != _SIZE:
        raise UsageError(
            f"{path}: expected {_SIZE} random bytes (the key of sticky canaries), "
            f"found {0 if data is None else len(data)}",
            hint=f"remove {path}; lbrec makes a new one (clients of a running canary are "
            "spread afresh once)",
        )
    return data


def _read(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | _NO_FOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UsageError(
            f"{path}: cannot read the key of sticky canaries ({err.strerror})",
            hint=f"it must be a regular file, not a symbolic link; remove {path} to make anew",
        ) from err
    with os.fdopen(fd, "rb") as handle:
        return handle.read(_SIZE + 1)


def _create(path: Path) -> None:
    """Write a new secret under a temporary name, then link it in place: a concurrent pass
    either wins or reads the winner's whole file, never a half-written one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(_SIZE))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
