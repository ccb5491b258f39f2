"""EDGE. ``.lbrec/acme``: the folder of the ACME client's account and challenge files (0700,
never through a symbolic link), and its lock: one order at a time per deploy folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..core.render import ACME_DIR
from .acme_errors import AcmeFailure
from .files import state_dir

__all__ = ["acme_dir", "order_lock", "private_subdir"]


@contextlib.contextmanager
def order_lock(folder: Path, *, timeout: float) -> Iterator[None]:
    """One order at a time per deploy folder (the manager of `lbrec up` and `lbrec certs
    --renew`): an exclusive lock on ``.lbrec/acme/lock``; AcmeFailure after ``timeout``."""
    acme = acme_dir(folder)
    fd = os.open(acme / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AcmeFailure(
                        "another lbrec command is ordering a certificate here "
                        f"(waited {timeout:g}s)"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def acme_dir(folder: Path) -> Path:
    state_dir(folder)
    path = folder / ACME_DIR
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if path.is_symlink():
        raise OSError(f"{path}: is a symbolic link; lbrec never writes through one")
    return path


def private_subdir(folder: Path, name: str) -> Path:
    path = acme_dir(folder) / name
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if path.is_symlink():
        raise OSError(f"{path}: is a symbolic link; lbrec never writes through one")
    return path
