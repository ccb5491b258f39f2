"""EDGE. Atomic file writes and the build-context digest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "build_context_digest", "folder_digest", "read_text_or_none"]


def read_text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def atomic_write(path: Path, text: str, *, mode: int | None = None) -> bool:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename, fsync dir).

    Returns False, writing nothing, when the content is already there. Readers see the old
    file or the new one, never a mix; a crash leaves at most a stray temp file.
    """
    try:
        if read_text_or_none(path) == text:
            return False
    except UnicodeDecodeError:
        pass  # not even UTF-8 (a corrupt file): replace it
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
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
