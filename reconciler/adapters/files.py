"""EDGE. Atomic file writes, the state folder, and the build-context digest.

File modes honour the operator's umask (the systemd units set ``UMask=0027``): an existing file
keeps its mode (as Ansible's atomic_move does), a new one is created ``0666 & ~umask``, or
``0640 & ~umask`` when it can hold backends' ``env:`` secrets (``docker-compose.yml``,
``.lbrec/stack.yml``, a desired-state file written by `lbrec sync`); the one exception is the
pool file, read by the proxy (maybe another user), which is ``0644``. The state folder
``.lbrec/`` is created ``0700``, and is refused when it is a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from ..core.defaults import STACK_FILE, STATE_DIR
from ..core.errors import StorageError, UsageError
from ..core.render import COMPOSE_FILE, POOL_FILE

__all__ = [
    "STATE_DIR",
    "atomic_write",
    "build_context_digest",
    "folder_digest",
    "open_no_follow",
    "read_text_or_none",
    "state_dir",
    "storage_error",
]

# Files whose content can hold secrets (backends' env): never readable by others when new.
_PRIVATE = (COMPOSE_FILE, STACK_FILE)
# Read by the proxy, which may run as another user: readable by all (no secret in it).
_PUBLIC = (POOL_FILE,)


_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space left (disk quota)"}


def storage_error(path: Path, err: OSError) -> StorageError:
    """``PATH: no space left on device; nothing was written`` (or the system's reason)."""
    why = _NO_ROOM.get(err.errno or 0) or (err.strerror or str(err)).lower()
    return StorageError(
        f"{path}: cannot write: {why}; nothing was written (the file is as it was)",
        hint="free space on that file system, then run the command again",
    )


def _symlink_refused(path: Path) -> UsageError:
    return UsageError(
        f"{path}: is a symbolic link; lbrec writes its own files there and never through a "
        "link (it could point anywhere)",
        hint=f"remove {path}; lbrec recreates it",
    )


def open_no_follow(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that never follows a symbolic link at ``path`` (O_NOFOLLOW, O_CLOEXEC):
    a link there is a :class:`UsageError` naming the path."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.EEXIST and path.is_symlink()):
            raise _symlink_refused(path) from None
        raise


def state_dir(folder: Path) -> Path:
    """``folder/.lbrec``, created 0700 when missing; a symbolic link there is refused."""
    path = folder / STATE_DIR
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if path.is_symlink():
            raise _symlink_refused(path) from None
    return path


def _make_parent(path: Path) -> None:
    parent = path.parent
    if parent.name == STATE_DIR:
        parent.parent.mkdir(parents=True, exist_ok=True)
        state_dir(parent.parent)
    elif not parent.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        if _is_public(path):  # config/ is bind-mounted into the lb, which runs as nobody
            os.chmod(parent, 0o755)


def _is_public(path: Path) -> bool:
    return any(path.as_posix().endswith("/" + name) for name in _PUBLIC)


def _new_file_mode(path: Path, private: bool) -> tuple[int, int | None]:
    """(the mode to create a new file with, under the umask; an exact mode to set after)."""
    if _is_public(path):
        return 0o644, 0o644
    if private or any(path.as_posix().endswith("/" + name) for name in _PRIVATE):
        return 0o640, None
    return 0o666, None


def read_text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def atomic_write(path: Path, text: str, *, mode: int | None = None, private: bool = False) -> bool:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename, fsync dir).

    Returns False, writing nothing, when the content is already there. Readers see the old
    file or the new one, never a mix; a crash leaves at most a stray temp file.

    The mode: ``mode`` exactly when given; else an existing file keeps its own, and a new one
    gets ``0666 & ~umask`` (``0640 & ~umask`` with ``private``, or for a file that can hold
    secrets, see the module's docstring).
    """
    try:
        if read_text_or_none(path) == text:
            return False
    except UnicodeDecodeError:
        pass  # not even UTF-8 (a corrupt file): replace it
    try:
        return _atomic_write(path, text, mode=mode, private=private)
    except OSError as err:  # a full disk, a read-only file system: one clear error
        if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise storage_error(path, err) from err


def _atomic_write(path: Path, text: str, *, mode: int | None, private: bool) -> bool:
    _make_parent(path)
    exact = mode
    create = 0o600 if mode is not None else 0o666
    if exact is None:
        try:
            exact = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            create, exact = _new_file_mode(path, private)
    fd, tmp = _temp_beside(path, create)
    try:
        if exact is not None:
            try:
                os.fchmod(fd, exact)
            except BaseException:
                os.close(fd)
                raise
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _temp_beside(path: Path, mode: int) -> tuple[int, Path]:
    """A new temp file next to ``path``, created ``mode & ~umask`` (the kernel applies it)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def build_context_digest(root: Path, dockerfile: str, extra: tuple[str, ...] = ("backend",)) -> str:
    """sha256 over the Dockerfile and the files it copies: a change means a new image."""
    digest = hashlib.sha256()
    paths = [root / dockerfile]
    for folder in extra:
        base = root / folder
        if base.is_dir():
            paths.extend(
                p for p in sorted(base.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
            )
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


_SKIP = frozenset({".git", "__pycache__", "node_modules", ".venv"})


def folder_digest(root: Path) -> str:
    """sha256 over every file of a build context (names and bytes), as a build would see it:
    a change of any file means a new image. VCS and cache folders are skipped."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _SKIP & set(path.relative_to(root).parts):
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
