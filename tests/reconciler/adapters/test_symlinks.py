"""Symlinks in the deploy folder (issue 20, finding 10): lbrec never truncates, appends to or
writes through a link it finds where its lock file, waiting marker, audit log or state folder
should be; it refuses with an error naming the path, and the file outside is untouched."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.audit import AUDIT_FILE, append_record
from lbrec.reconciler.adapters.lock import LOCK_FILE, WAIT_PREFIX, announced, project_lock
from lbrec.reconciler.core.errors import UsageError

PRECIOUS = "precious content\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the deploy folder that lbrec can write (the link's target)."""
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text(PRECIOUS)
    return victim


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    return deploy


def test_a_lock_file_that_is_a_symlink_is_refused(folder: Path, outside: Path) -> None:
    (folder / LOCK_FILE).symlink_to(outside)
    with (
        pytest.raises(UsageError) as caught,
        project_lock(folder, command="lbrec apply", timeout=5),
    ):
        pass
    assert outside.read_text() == PRECIOUS
    assert str(folder / LOCK_FILE) in caught.value.message
    assert "symbolic link" in caught.value.message


def test_an_audit_log_that_is_a_symlink_is_refused(folder: Path, outside: Path) -> None:
    log = folder / AUDIT_FILE
    log.parent.mkdir()
    log.symlink_to(outside)
    with pytest.raises(UsageError) as caught:
        append_record(folder, {"outcome": "deployed"})
    assert outside.read_text() == PRECIOUS
    assert str(log) in caught.value.message and "symbolic link" in caught.value.message


def test_a_state_folder_that_is_a_symlink_is_refused(folder: Path, outside: Path) -> None:
    (folder / ".lbrec").symlink_to(outside.parent)
    with pytest.raises(UsageError) as caught:
        append_record(folder, {"outcome": "deployed"})
    assert sorted(p.name for p in outside.parent.iterdir()) == ["victim.txt"]
    assert outside.read_text() == PRECIOUS
    assert str(folder / ".lbrec") in caught.value.message


@pytest.fixture
def held(folder: Path) -> Iterator[None]:
    """The folder's lock held by another open file description (as another process would)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def test_a_waiting_marker_that_is_a_symlink_is_never_written_through(
    folder: Path, outside: Path, held: None
) -> None:
    marker = folder / f"{WAIT_PREFIX}{os.getpid()}"
    marker.symlink_to(outside)
    with pytest.raises(UsageError) as caught, announced(folder, "lbrec add"):
        pass
    assert outside.read_text() == PRECIOUS
    assert str(marker) in caught.value.message
