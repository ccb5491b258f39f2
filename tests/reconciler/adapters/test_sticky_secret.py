"""The host's secret behind sticky canaries' keys (issue 20 finding 13)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.sticky_secret import STICKY_SECRET_FILE, host_sticky_secret
from lbrec.reconciler.core.errors import UsageError


def test_made_once_private_and_stable(tmp_path: Path) -> None:
    first = host_sticky_secret(tmp_path)
    assert len(first) == 32 and first == host_sticky_secret(tmp_path)
    path = tmp_path / STICKY_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    other = tmp_path / "other"
    other.mkdir()
    assert host_sticky_secret(other) != first  # per deploy folder, random
    assert [p.name for p in path.parent.iterdir()] == ["sticky.key"]  # no temporary left


def test_never_through_a_link_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x" * 32)
    (tmp_path / ".lbrec").mkdir()
    (tmp_path / STICKY_SECRET_FILE).symlink_to(target)
    with pytest.raises(UsageError, match=r"sticky\.key: cannot read"):
        host_sticky_secret(tmp_path)
    (tmp_path / STICKY_SECRET_FILE).unlink()
    (tmp_path / STICKY_SECRET_FILE).write_bytes(b"short")
    with pytest.raises(UsageError, match=r"expected 32 random bytes .* found 5"):
        host_sticky_secret(tmp_path)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".lbrec").symlink_to(tmp_path / ".lbrec")
    with pytest.raises(UsageError, match="is a symbolic link"):
        host_sticky_secret(linked)
