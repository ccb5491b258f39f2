"""GitOps on the real engine through the CLI: a commit deploys, a bad commit does not, a revert
rolls back, and the deployed commit is stamped on containers, in backends.json and in status."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Project, free_ports, http_request, spec_text, wait_until

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
    project.assert_in_sync()


def test_up_with_repo_deploys_on_webhook(project: Project, tmp_path: Path) -> None:
    """`lbrec up --repo` serves the branch head; POST /-/sync deploys a new commit at once,
    long before the next poll (--interval 1h)."""
    bare, work = tmp_path / "config.git", tmp_path / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    listen, admin, p1, p2 = free_ports(4)
    head = f"listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n"
    _commit(work, spec_text(project.name, [("w1", p1, 1)], extra=head), "one")
    # The webhook on needs the admin token (issue 20 finding 11); `lbrec status` reads with it.
    project.env["LBREC_ADMIN_TOKEN"] = "adm1n"
    env = dict(project.env, LBREC_SYNC_TOKEN="t0ken")
    log = open(project.folder / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbrec", "up", "--repo", str(bare), "--interval", "1h"],
        cwd=project.folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )

    request = http_request
    log_path = project.folder / "up.log"

    def until(predicate: Callable[[], bool], timeout: float) -> None:
        wait_until(predicate, timeout, "lbrec up --repo", log=log_path)

    try:
        until(lambda: request("GET", listen, "/") == (200, "w1"), 180)
        _commit(work, spec_text(project.name, [("w1", p1, 1), ("w2", p2, 1)], extra=head), "two")
        assert request("POST", admin, "/-/sync", "wrong")[0] == 401
        assert request("POST", admin, "/-/sync", "t0ken")[0] == 202
        until(lambda: "w2" in {request("GET", listen, "/")[1] for _ in range(4)}, 60)
        status = json.loads(project.lbrec("status", "-o", "json", check=True).stdout)
        assert status["deployed"]["message"].startswith("two")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
