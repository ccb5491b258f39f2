"""GitOps sync against a real local bare repository; a fake apply for the fast tests.

One end-to-end test (marked ``docker``) deploys two commits on the real engine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lbrec.proxy.config import Revision
from lbrec.reconciler.adapters.engines.auto import engine_for
from lbrec.reconciler.adapters.files import atomic_write
from lbrec.reconciler.adapters.records import read_deployed
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.durations import parse_duration
from lbrec.reconciler.core.errors import ApplyError, DockerUnavailable
from lbrec.reconciler.core.plan import Action, ActionKind, Plan
from lbrec.reconciler.core.report import Outcome, Report
from lbrec.reconciler.core.spec import DesiredState, parse_spec
from lbrec.reconciler.core.webhooks import token_matches
from lbrec.reconciler.runtime.options import RuntimeOptions
from lbrec.reconciler.runtime.sync import (
    SyncLoop,
    SyncSource,
    SyncState,
    run_sync,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
GOOD_A = "backends:\n  - {name: a, port: 19501, weight: 1}\n"
GOOD_B = GOOD_A + "  - {name: b, port: 19502, weight: 2}\n"
INVALID = "backends:\n  - {name: a, port: 70000, weight: 1}\n"


def git(cwd: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="Alice",
        GIT_AUTHOR_EMAIL="alice@example.com",
        GIT_COMMITTER_NAME="Alice",
        GIT_COMMITTER_EMAIL="alice@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


@dataclass
class Origin:
    """A bare repository and a working clone that pushes to it."""

    bare: Path
    work: Path

    def commit(self, text: str, message: str, path: str = "desired-state.yaml") -> str:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(self.work, "add", path)
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def revert_head(self) -> str:
        git(self.work, "revert", "--no-edit", "HEAD")
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture(autouse=True)
def _reset_loggers() -> Iterator[None]:
    yield
    for name in ("lbrec.sync", "lbrec.watch"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


@dataclass
class FakeApply:
    calls: list[tuple[DesiredState, Revision]] = field(default_factory=list)
    fail: str | None = None  # a backend that comes back unhealthy
    raises: Exception | None = None
    folder: Path = Path()

    def deploy(self, text: str, revision: Revision, after: Callable[[Report], None]) -> Report:
        """A DeployFn: writes the file as the real one does, then this fake's report."""
        atomic_write(Workspace.at(self.folder / "desired-state.yaml").spec_file, text)
        report = self(parse_spec(text), revision)
        after(report)
        return report

    def __call__(self, desired: DesiredState, revision: Revision) -> Report:
        self.calls.append((desired, revision))
        if self.raises is not None:
            raise self.raises
        if self.fail is None:
            return Report(plan=Plan(actions=()), check=False)
        action = Action(ActionKind.CREATE, self.fail)
        return Report(
            plan=Plan(actions=(action,)),
            check=False,
            outcomes=(Outcome(action, ok=False, error=f"{self.fail}: not healthy after 60s"),),
        )

    @property
    def commits(self) -> list[str | None]:
        return [r.commit for _, r in self.calls]


def make_sync(
    origin: Origin, deploy: Workspace, fake: FakeApply, *, interval: float = 30.0
) -> SyncLoop:
    fake.folder = deploy.folder
    return SyncLoop(SyncSource(str(origin.bare)), deploy, deploy=fake.deploy, interval=interval)


def test_new_commit_is_detected_and_applied(origin: Origin, deploy: Workspace) -> None:
    fake = FakeApply()
    sync = make_sync(origin, deploy, fake)
    first = origin.commit(GOOD_A, "one backend")
    result = sync.sync_once()
    assert (result.state, result.commit, result.exit_code) == (SyncState.DEPLOYED, first, 0)
    desired, revision = fake.calls[-1]
    assert [b.name for b in desired.backends] == ["a"]
    assert revision.commit == first
    assert revision.author == "Alice <alice@example.com>"
    assert revision.message == "one backend"
    assert revision.source == str(origin.bare)
    assert deploy.spec_file.read_text() == GOOD_A

    second = origin.commit(GOOD_B, "add b")
    assert sync.sync_once().state is SyncState.DEPLOYED
    assert fake.commits == [first, second]
    assert [b.name for b in fake.calls[-1][0].backends] == ["a", "b"]
    assert deploy.spec_file.read_text() == GOOD_B


def test_deployed_json_records_the_revision(origin: Origin, deploy: Workspace) -> None:
    sync = make_sync(origin, deploy, FakeApply())
    commit = origin.commit(GOOD_A, "first deploy")
    sync.sync_once()
    deployed = json.loads((deploy.folder / ".lbrec/deployed.json").read_text())
    assert deployed["commit"] == commit
    assert deployed["author"] == "Alice <alice@example.com>"
    assert deployed["message"] == "first deploy"
    assert deployed["source"] == str(origin.bare)
    assert deployed["branch"] == "main" and deployed["path"] == "desired-state.yaml"
    assert deployed["time"] and deployed["deployed_at"]
    # A pass with nothing new reconciles again (level-triggered) but keeps the record as is.
    before = (deploy.folder / ".lbrec/deployed.json").stat().st_mtime_ns
    assert sync.sync_once().state is SyncState.DEPLOYED
    assert (deploy.folder / ".lbrec/deployed.json").stat().st_mtime_ns == before


def test_invalid_commit_is_reported_and_not_applied(
    origin: Origin, deploy: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbrec.sync")
    fake = FakeApply()
    sync = make_sync(origin, deploy, fake)
    good = origin.commit(GOOD_A, "good")
    sync.sync_once()
    bad = origin.commit(INVALID, "typo in the port")
    result = sync.sync_once()
    assert (result.state, result.commit, result.exit_code) == (SyncState.INVALID, bad, 2)
    assert result.error is not None
    assert f"desired-state.yaml@{bad[:12]}" in result.error and "backends[0].port" in result.error
    assert f"commit {bad[:12]}: invalid" in caplog.text and "not applied" in caplog.text
    assert fake.commits == [good]  # never applied
    assert deploy.spec_file.read_text() == GOOD_A  # the last good file stays
    assert read_deployed(deploy.folder)["commit"] == good  # type: ignore[index]
    # Reported once per commit, not on every poll.
    sync.sync_once()
    assert caplog.text.count(f"commit {bad[:12]}: invalid") == 1
    fixed = origin.commit(GOOD_B, "fix the port, add b")
    assert sync.sync_once().state is SyncState.DEPLOYED
    assert fake.commits == [good, fixed]
    assert read_deployed(deploy.folder)["commit"] == fixed  # type: ignore[index]


def test_loop_keeps_reconciling_the_last_good_commit_while_head_is_invalid(
    origin: Origin, deploy: Workspace
) -> None:
    fake = FakeApply()
    sync = make_sync(origin, deploy, fake)
    good = origin.commit(GOOD_A, "good")
    sync._pass()
    origin.commit(INVALID, "bad")
    report = sync._pass()  # drift repair goes on with the last good revision
    assert not report.failed
    assert fake.commits == [good, good]


def test_invalid_first_commit_without_a_last_good_is_permanent(
    origin: Origin, deploy: Workspace
) -> None:
    from lbrec.reconciler.core.errors import SpecError

    sync = make_sync(origin, deploy, FakeApply())
    bad = origin.commit(INVALID, "bad")
    with pytest.raises(SpecError, match=bad[:12]):
        sync._pass()
    assert not deploy.spec_file.exists()


def test_revert_deploys_the_previous_content(origin: Origin, deploy: Workspace) -> None:
    fake = FakeApply()
    sync = make_sync(origin, deploy, fake)
    origin.commit(GOOD_A, "one")
    sync.sync_once()
    origin.commit(GOOD_B, "two")
    sync.sync_once()
    revert = origin.revert_head()
    result = sync.sync_once()
    assert (result.state, result.commit) == (SyncState.DEPLOYED, revert)
    assert [b.name for b in fake.calls[-1][0].backends] == ["a"]
    assert deploy.spec_file.read_text() == GOOD_A
    assert read_deployed(deploy.folder)["message"].startswith('Revert "two"')  # type: ignore[index]


def test_failed_apply_is_not_recorded_as_deployed(origin: Origin, deploy: Workspace) -> None:
    fake = FakeApply()
    sync = make_sync(origin, deploy, fake)
    good = origin.commit(GOOD_A, "one")
    sync.sync_once()
    fake.fail = "b"
    second = origin.commit(GOOD_B, "two")
    result = sync.sync_once()
    assert (result.state, result.exit_code) == (SyncState.FAILED, 1)
    assert "b: not healthy" in (result.error or "")
    assert read_deployed(deploy.folder)["commit"] == good  # type: ignore[index]
    fake.fail = None
    assert sync.sync_once().state is SyncState.DEPLOYED
    assert read_deployed(deploy.folder)["commit"] == second  # type: ignore[index]


def test_file_in_a_subfolder_and_other_branch(origin: Origin, deploy: Workspace) -> None:
    git(origin.work, "checkout", "-q", "-b", "prod")
    origin.work.joinpath("envs/prod").mkdir(parents=True)
    commit = origin.commit(GOOD_A, "prod", path="envs/prod/lb.yaml")
    git(origin.work, "push", "-q", "origin", "prod")
    fake = FakeApply()
    fake.folder = deploy.folder
    source = SyncSource(str(origin.bare), "prod", "envs/prod/lb.yaml")
    sync = SyncLoop(source, deploy, deploy=fake.deploy)
    assert sync.sync_once().commit == commit
    assert fake.commits == [commit]


# -- --once exit codes ------------------------------------------------------------------


def once(origin: Origin, deploy: Workspace, apply: FakeApply, **kw: str) -> int:
    apply.folder = deploy.folder
    options = RuntimeOptions(
        repo=kw.get("repo", str(origin.bare)),
        file=deploy.spec_file,
        path=kw.get("path", "desired-state.yaml"),
        once=True,
    )
    return run_sync(options, engine_for, deploy=apply.deploy)


def test_once_exit_codes(
    origin: Origin, deploy: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeApply()
    good = origin.commit(GOOD_A, "good")
    assert once(origin, deploy, fake) == 0
    assert f"commit {good[:12]}: deployed" in capsys.readouterr().err

    bad = origin.commit(INVALID, "bad")
    assert once(origin, deploy, fake) == 2
    err = capsys.readouterr().err
    assert f"commit {bad[:12]}: invalid" in err and "backends[0].port" in err

    failing = origin.commit(GOOD_B, "b")
    assert once(origin, deploy, FakeApply(fail="b")) == 1
    assert f"commit {failing[:12]}: apply failed: b: not healthy" in capsys.readouterr().err

    assert once(origin, deploy, FakeApply(raises=DockerUnavailable("no engine"))) == 3
    assert f"commit {failing[:12]}: DockerUnavailable: no engine" in capsys.readouterr().err
    assert once(origin, deploy, FakeApply(raises=ApplyError("build failed: x"))) == 1

    assert once(origin, deploy, fake, path="missing.yaml") == 2
    assert "missing.yaml: not in commit" in capsys.readouterr().err
    assert once(origin, deploy, fake, repo=str(origin.bare.parent / "nope.git")) == 5
    err = capsys.readouterr().err
    # git's reason, not its generic last line ("Please make sure you have the correct access")
    assert "GitError: git fetch failed: fatal: '" in err
    assert "does not appear to be a git repository" in err
    assert once(origin, Workspace.at(deploy.folder / "nope" / "desired-state.yaml"), fake) == 2
    assert "no such deploy folder" in capsys.readouterr().err


def test_once_with_a_relative_repo_path(
    origin: Origin, deploy: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.commit(GOOD_A, "good")
    monkeypatch.chdir(origin.bare.parent)
    fake = FakeApply()
    assert once(origin, deploy, fake, repo="origin.git") == 0
    assert fake.calls[0][1].source == str(origin.bare)


def test_once_from_a_post_receive_hook_environment(
    origin: Origin, deploy: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git sets GIT_DIR for hooks; the mirror must not follow it into the pushed repository."""
    commit = origin.commit(GOOD_A, "good")
    monkeypatch.setenv("GIT_DIR", str(origin.bare))
    monkeypatch.chdir(origin.bare)
    fake = FakeApply()
    assert once(origin, deploy, fake) == 0
    assert fake.commits == [commit]
    assert (deploy.folder / ".lbrec/repo/HEAD").is_file()  # the mirror, not the pushed repo
    assert "refs/lbrec" not in git(origin.bare, "for-each-ref")


# -- the loop: polling, webhook trigger, stop -------------------------------------------


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.timeout(30)
def test_loop_polls_and_webhook_triggers(origin: Origin, deploy: Workspace) -> None:
    fake = FakeApply()
    first = origin.commit(GOOD_A, "one")
    sync = make_sync(origin, deploy, fake, interval=0.3)
    sync.start()
    try:
        wait_until(lambda: first in fake.commits)
        second = origin.commit(GOOD_B, "two")
        wait_until(lambda: second in fake.commits)  # found by polling
    finally:
        sync.stop()
        assert sync.join(5)

    slow = make_sync(origin, deploy, fake, interval=60)
    slow.start()
    try:
        wait_until(lambda: slow.loop.passes == 1)
        third = origin.commit(GOOD_A, "three")
        slow.trigger()
        wait_until(lambda: third in fake.commits, timeout=5)  # long before the 60 s poll
    finally:
        slow.stop()
        assert slow.join(5)


def test_token_matches() -> None:
    assert token_matches("Bearer s3cret", "s3cret")
    assert token_matches("bearer  s3cret ", "s3cret")
    assert token_matches("s3cret", "s3cret")
    assert not token_matches("Bearer wrong", "s3cret")
    assert not token_matches(None, "s3cret")
    assert not token_matches("", "")  # no token configured: the webhook is off


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30), ("30s", 30), ("500ms", 0.5), ("2m", 120), ("1h", 3600)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


# -- end to end on the real engine ------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    for port in range(19000 + uuid.uuid4().int % 900, 20000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no free ports in 19xxx")


def _containers(project: str) -> dict[str, dict[str, str]]:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=lbrec.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not ids:
        return {}
    inspect = json.loads(
        subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
    )
    return {
        c["Config"]["Labels"]["lbrec.backend"]: {
            "id": c["Id"],
            "state": c["State"]["Status"],
            "revision": c["Config"]["Labels"].get("lbrec.revision", ""),
        }
        for c in inspect
    }


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_sync_deploys_commits_on_the_real_engine(
    origin: Origin, deploy: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("Dockerfile.backend", ".dockerignore"):
        shutil.copy(REPO_ROOT / name, deploy.folder / name)
    shutil.copytree(
        REPO_ROOT / "backend",
        deploy.folder / "backend",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.setenv(
        "LBREC_BASE_IMAGE", os.environ.get("LBREC_BASE_IMAGE", "lbrec-base:bookworm")
    )
    project = f"lbrec-t-{uuid.uuid4().hex[:8]}"
    listen, admin, p1, p2 = _free_ports(4)
    head = f"project: {project}\nlisten: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\nbackends:\n"
    one = head + f"  - {{name: web1, port: {p1}, weight: 1}}\n"
    two = one + f"  - {{name: web2, port: {p2}, weight: 3}}\n"
    real = RuntimeOptions(
        repo=str(origin.bare), file=deploy.spec_file, once=True, health_timeout=90
    )
    try:
        first = origin.commit(one, "deploy web1")
        code = run_sync(real, engine_for)
        assert code == 0
        running = _containers(project)
        assert set(running) == {"web1"}
        assert running["web1"]["state"] == "running"
        assert running["web1"]["revision"] == first

        second = origin.commit(two, "add web2")
        code = run_sync(real, engine_for)
        assert code == 0
        running = _containers(project)
        assert set(running) == {"web1", "web2"}
        assert running["web2"]["revision"] == second
        assert running["web1"]["revision"] == first  # untouched, keeps its stamp
        pool = json.loads((deploy.folder / "config/backends.json").read_text())
        assert pool["revision"]["commit"] == second
        assert {b["name"]: b["weight"] for b in pool["backends"]} == {"web1": 1, "web2": 3}
        deployed = read_deployed(deploy.folder)
        assert deployed is not None and deployed["commit"] == second
    finally:
        ids = [c["id"] for c in _containers(project).values()]
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        subprocess.run(
            ["docker", "network", "rm", f"{project}_default"], capture_output=True, check=False
        )
        images = subprocess.run(
            ["docker", "images", "-q", f"{project}-backend"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if images:
            subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True, check=False)
