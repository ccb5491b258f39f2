"""File modes (issue 20, finding 9): new files honour the umask (the systemd units set
``UMask=0027``), files that carry backends' ``env:`` secrets are at most 0640, an existing
file keeps its mode, and the state folder ``.lbrec/`` is created 0700."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrec.proxy.config import Revision
from lbrec.reconciler.adapters.audit import append_record
from lbrec.reconciler.adapters.files import atomic_write
from lbrec.reconciler.adapters.git import Mirror
from lbrec.reconciler.adapters.lock import project_lock
from lbrec.reconciler.adapters.records import write_deployed
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.spec import DesiredState

from ..fakes import FAST, FakeDocker, make_folder

SECRET_BACKENDS = "backends:\n  - {name: a, port: 9101, weight: 1, env: {DB_PASSWORD: hunter2}}\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027() -> Iterator[None]:
    """The units' UMask=0027 for the test (the process's umask is restored after)."""
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_file_honours_the_umask(tmp_path: Path, umask_027: None) -> None:
    path = tmp_path / "notes.txt"
    atomic_write(path, "x\n")
    assert _mode(path) == 0o640  # 0666 & ~0027, not a forced 0644


def test_an_existing_file_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "desired-state.yaml"
    path.write_text("old\n")
    path.chmod(0o600)
    atomic_write(path, "new\n")
    assert _mode(path) == 0o600 and path.read_text() == "new\n"
    path.chmod(0o664)
    atomic_write(path, "newer\n")
    assert _mode(path) == 0o664


def test_an_explicit_mode_is_kept_exactly(tmp_path: Path, umask_027: None) -> None:
    path = tmp_path / "run.sh"
    atomic_write(path, "#!/bin/sh\n", mode=0o755)
    assert _mode(path) == 0o755


def test_a_private_file_is_never_readable_by_others(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "desired-state.yaml"
    atomic_write(path, SECRET_BACKENDS, private=True)
    assert _mode(path) == 0o640


@pytest.mark.parametrize("name", ["docker-compose.yml", ".lbrec/stack.yml"])
def test_the_files_that_carry_env_secrets_are_0640(
    tmp_path: Path, umask_022: None, name: str
) -> None:
    path = tmp_path / name
    atomic_write(path, "services: {}\n")
    assert _mode(path) == 0o640


def test_the_pool_file_stays_readable_by_the_proxy_user(tmp_path: Path, umask_027: None) -> None:
    """config/backends.json is read by the proxy, which may run as another user (the lb
    container's non-root user): readable by all, whatever the umask; no secret is in it."""
    path = tmp_path / "config" / "backends.json"
    atomic_write(path, "{}\n")
    assert _mode(path) == 0o644
    assert _mode(path.parent) == 0o755  # ./config is bind-mounted into the lb (nobody)


def test_the_state_folder_is_created_0700(tmp_path: Path, umask_022: None) -> None:
    for make in (
        lambda folder: append_record(folder, {"outcome": "deployed"}),
        lambda folder: write_deployed(
            folder, Revision(commit="c" * 40, source="repo"), branch="main", path="x"
        ),
        lambda folder: atomic_write(folder / ".lbrec" / "rollout.json", "{}\n"),
        lambda folder: Mirror("unused", folder / ".lbrec" / "repo").ensure(),
    ):
        folder = tmp_path / f"deploy{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        make(folder)
        assert _mode(folder / ".lbrec") == 0o700


def test_the_lock_creates_the_state_folder_0700(tmp_path: Path, umask_022: None) -> None:
    with project_lock(tmp_path, command="lbrec apply", timeout=5):
        pass
    assert _mode(tmp_path / ".lbrec") == 0o700


def test_a_pass_writes_the_secrets_readable_by_the_owner_and_group_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_027: None
) -> None:
    """`lbrec apply` end to end (a fake engine) under UMask=0027: nothing it writes is
    readable by others, and docker-compose.yml (which holds the env) is 0640."""
    folder = make_folder(tmp_path)
    monkeypatch.setattr("lbrec.reconciler.adapters.probes.http_probe", lambda url, timeout: None)
    spec = folder / "desired-state.yaml"
    spec.write_text(FAST + SECRET_BACKENDS)

    def factory(workspace: Workspace, desired: DesiredState) -> FakeDocker:
        return FakeDocker(workspace, desired)

    assert main(["apply", "-f", str(spec)], docker=factory) == 0
    compose = folder / "docker-compose.yml"
    assert "hunter2" in compose.read_text()
    assert _mode(compose) == 0o640
    assert _mode(folder / ".lbrec") == 0o700
    readable_by_others = [
        str(p.relative_to(folder))
        for p in [*folder.rglob("*")]
        if p.is_file() and p != spec and _mode(p) & 0o004 and ".lbrec" in p.parts
    ]
    assert readable_by_others == []
