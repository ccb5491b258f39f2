"""Atomic writes (all or nothing, nothing when unchanged) and the build-context digest."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from lbrec.reconciler.adapters.files import atomic_write, build_context_digest, read_text_or_none
from lbrec.reconciler.core.errors import StorageError


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_a_new_file_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "config" / "backends.json"
    assert atomic_write(path, "{}\n") is True
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _entries(path.parent) == ["backends.json"]


def test_replaces_content_with_a_new_inode(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old\n")
    before = path.stat().st_ino
    with path.open() as reader:  # a reader of the old file keeps the old content
        assert atomic_write(path, "new\n") is True
        assert reader.read() == "old\n"
    assert path.read_text() == "new\n"
    assert path.stat().st_ino != before
    assert _entries(tmp_path) == ["f.txt"]


def test_identical_content_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("same\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    inode = path.stat().st_ino
    assert atomic_write(path, "same\n") is False
    after = path.stat()
    assert after.st_mtime_ns == 1_000_000_000
    assert after.st_ino == inode
    assert _entries(tmp_path) == ["f.txt"]


def test_keeps_the_mode_of_the_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("a")
    path.chmod(0o600)
    assert atomic_write(path, "b") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o755)
    assert atomic_write(path, "c") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_explicit_mode_wins(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("a")
    assert atomic_write(path, "b", mode=0o640) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_unicode_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    text = "名前: ünïcødé ✓\n"
    assert atomic_write(path, text) is True
    assert path.read_bytes() == text.encode("utf-8")
    assert atomic_write(path, text) is False


def test_failed_rename_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old\n")

    def boom(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lbrec.reconciler.adapters.files.os.replace", boom)
    with pytest.raises(StorageError, match=r"f\.txt: cannot write: no space left"):
        atomic_write(path, "new\n")  # a clear error naming the file (issue 25 point 6)
    assert path.read_text() == "old\n"
    assert _entries(tmp_path) == ["f.txt"]


def test_failed_fsync_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old\n")

    def boom(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr("lbrec.reconciler.adapters.files.os.fsync", boom)
    with pytest.raises(StorageError, match="i/o error"):
        atomic_write(path, "new\n")
    assert path.read_text() == "old\n"
    assert _entries(tmp_path) == ["f.txt"]


def test_interrupted_write_never_leaves_a_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process is interrupted halfway through writing: the target keeps its old bytes."""
    path = tmp_path / "f.txt"
    path.write_text("old\n")
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, text: str) -> int:
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise KeyboardInterrupt

    monkeypatch.setattr(
        "lbrec.reconciler.adapters.files.os.fdopen",
        lambda fd, *a, **kw: HalfWriter(real_fdopen(fd, *a, **kw)),
    )
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new content that is long enough to be cut in half\n")
    assert path.read_text() == "old\n"
    assert _entries(tmp_path) == ["f.txt"]


def test_concurrent_reader_sees_old_or_new_never_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    big_a = "a" * 200_000 + "\n"
    big_b = "b" * 300_000 + "\n"
    path.write_text(big_a)
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = path.read_text()
            seen.add("a" if text == big_a else "b" if text == big_b else f"torn:{len(text)}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            atomic_write(path, big_b if i % 2 == 0 else big_a)
    finally:
        stop.set()
        thread.join()
    assert seen <= {"a", "b"}, seen


def test_read_text_or_none(tmp_path: Path) -> None:
    assert read_text_or_none(tmp_path / "missing") is None
    (tmp_path / "x").write_text("hi")
    assert read_text_or_none(tmp_path / "x") == "hi"


# --- build context digest ----------------------------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile.backend").write_text("FROM python:3.12-slim\nCOPY backend /app\n")
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "app.py").write_text("print('v1')\n")
    (tmp_path / "backend" / "static").mkdir()
    (tmp_path / "backend" / "static" / "index.html").write_text("<p>hi</p>\n")
    (tmp_path / "desired-state.yaml").write_text("backends: []\n")
    return tmp_path


def _digest(root: Path) -> str:
    return build_context_digest(root, "Dockerfile.backend")


def test_digest_is_stable(context: Path) -> None:
    first = _digest(context)
    assert len(first) == 64
    assert _digest(context) == first


def test_digest_changes_when_app_changes(context: Path) -> None:
    before = _digest(context)
    (context / "backend" / "app.py").write_text("print('v2')\n")
    assert _digest(context) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "Dockerfile.backend").write_text("FROM python:3.13-slim\n"),
        lambda root: (root / "backend" / "new.py").write_text(""),
        lambda root: (root / "backend" / "static" / "index.html").unlink(),
        lambda root: (root / "backend" / "app.py").rename(root / "backend" / "main.py"),
    ],
    ids=["dockerfile", "file-added", "file-removed", "file-renamed"],
)
def test_digest_changes_with_the_context(context: Path, change: Any) -> None:
    before = _digest(context)
    change(context)
    assert _digest(context) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "desired-state.yaml").write_text("backends: [x]\n"),
        lambda root: (root / "docker-compose.yml").write_text("services: {}\n"),
        lambda root: (
            (root / "backend" / "__pycache__").mkdir()
            or (root / "backend" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
        ),
    ],
    ids=["desired-state", "compose-file", "pycache"],
)
def test_digest_ignores_files_outside_the_context(context: Path, change: Any) -> None:
    before = _digest(context)
    change(context)
    assert _digest(context) == before


def test_digest_without_backend_folder(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.backend").write_text("FROM x\n")
    assert len(_digest(tmp_path)) == 64


def test_replaces_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    """A corrupt file must not make the rewrite that repairs it impossible."""
    path = tmp_path / "backends.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert atomic_write(path, "{}\n") is True
    assert path.read_text() == "{}\n"
