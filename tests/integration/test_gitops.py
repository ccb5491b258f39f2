"""GitOps on the real engine through the CLI: a commit deploys, a bad commit does not, a revert
rolls back, and the deployed commit is stamped on containers, in backends.json and in status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import Project, free_ports, spec_text

pytestmark = pytest.mark.docker


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.test", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _commit(work: Path, text: str, message: str) -> str:
    (work / "desired-state.yaml").write_text(text)
    _git(work, "add", "desired-state.yaml")
    _git(work, "commit", "-q", "-m", message)
    _git(work, "push", "-q", "origin", "HEAD:main")
    return _git(work, "rev-parse", "HEAD")


def test_sync_deploys_rejects_and_reverts(project: Project, tmp_path: Path) -> None:
    bare, work = tmp_path / "config.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    p1, p2 = free_ports(2)

    def sync() -> subprocess.CompletedProcess[str]:
        return project.lbrec("sync", "--repo", str(bare), "--branch", "main", "--once")

    first = _commit(work, spec_text(project.name, [("g1", p1, 1)]), "one backend")
    r = sync()
    assert r.returncode == 0, r.stdout + r.stderr
    assert project.containers()["g1"]["revision"] == first
    assert project.pool["revision"]["commit"] == first  # type: ignore[index]
    status = json.loads(project.lbrec("status", "-o", "json", check=True).stdout)
    assert status["deployed"]["commit"] == first and status["deployed"]["author"].startswith("Ada")

    bad = _commit(work, "backends: [{name: g1, port: 0}]\n", "broken")
    r = sync()
    assert r.returncode == 2
    assert bad[:12] in r.stdout + r.stderr and "port" in r.stdout + r.stderr
    assert set(project.containers()) == {"g1"}
    assert project.pool["revision"]["commit"] == first  # type: ignore[index]

    good = _commit(work, spec_text(project.name, [("g1", p1, 1), ("g2", p2, 3)]), "two")
    r = sync()
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(project.containers()) == {"g1", "g2"}
    assert project.containers()["g2"]["revision"] == good
    assert project.routed() == {"g1": 1, "g2": 3}

    _git(work, "revert", "--no-edit", "HEAD")  # back to the broken commit's content...
    _git(work, "revert", "--no-edit", "HEAD~2")  # ...and undo the break: one backend again
    _git(work, "push", "-q", "origin", "HEAD:main")
    head = _git(work, "rev-parse", "HEAD")
    r = sync()
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(project.containers()) == {"g1"}  # pruned
    assert project.pool["revision"]["commit"] == head  # type: ignore[index]
    assert project.lbrec("diff").returncode == 0
