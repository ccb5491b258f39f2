"""Fixtures of the GitOps tests: a bare repository with a working clone, and a deploy folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbrec.reconciler.adapters.workspace import Workspace

from .test_sync import Origin, git


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    return Origin(bare, work)


@pytest.fixture
def deploy(tmp_path: Path) -> Workspace:
    folder = tmp_path / "deploy"
    folder.mkdir()
    return Workspace.at(folder / "desired-state.yaml")
