"""`lbrec status` tells a missing pool file from an invalid one (the proxy serves its last
good pool meanwhile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.status import collect_status, show_status
from lbrec.reconciler.core.render import POOL_FILE
from lbrec.reconciler.engine.converge import converge

from ..fakes import FAST, TWO, FakeDocker, make_folder


def _workspace(tmp_path: Path) -> tuple[Workspace, FakeDocker]:
    folder = make_folder(tmp_path)
    (folder / "desired-state.yaml").write_text(FAST + TWO)
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    return workspace, docker


def test_missing_pool_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace, docker = _workspace(tmp_path)
    status = collect_status(workspace, lambda _w, _d: docker)
    assert status["pool_problem"] == "missing" and status["generation"] is None
    show_status(workspace, lambda _w, _d: docker, json_mode=False)
    assert "no config/backends.json yet" in capsys.readouterr().out


def test_invalid_pool_file_is_called_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace, docker = _workspace(tmp_path)
    converge(workspace, docker, check=False, hooks=docker.hooks())
    assert collect_status(workspace, lambda _w, _d: docker)["pool_problem"] is None
    (workspace.folder / POOL_FILE).write_text('{"backends": [{"name": "A"}]}')
    status = collect_status(workspace, lambda _w, _d: docker)
    assert status["pool_problem"].startswith("invalid: ")
    assert "backends[0]" in status["pool_problem"]
    show_status(workspace, lambda _w, _d: docker, json_mode=False)
    out = capsys.readouterr().out
    assert "config/backends.json is invalid" in out and "last good pool" in out
    assert "no config/backends.json" not in out
