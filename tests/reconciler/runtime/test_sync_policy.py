"""Issue 20: the operator's policy under `lbrec sync` (a commit is not root).

A refused commit changes nothing (no deployment, no file written), the last good commit keeps
serving, and the refusal is logged, counted by rule and told to the operator's receiver."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.audit import flush_notifications
from lbrec.reconciler.adapters.engines.auto import engine_for
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.policy import Policy
from lbrec.reconciler.runtime.metrics import LOOP_METRICS
from lbrec.reconciler.runtime.options import RuntimeOptions
from lbrec.reconciler.runtime.sync import SyncLoop, SyncSource, SyncState, run_sync

from ..local_http import answering
from .test_sync import GOOD_A, FakeApply, Origin

EVIL_BASE = "base_image: attacker/onbuild:1\n" + GOOD_A
EVIL_ADMIN = "admin: 127.0.0.1:32768\n" + GOOD_A


def _refused(rule: str) -> float:
    value = LOOP_METRICS.registry.get_sample_value(
        "lbrec_sync_commits_refused_total", {"loop": "sync", "rule": rule}
    )
    return value or 0.0


def test_a_refused_commit_changes_nothing_and_the_serving_version_stays(
    origin: Origin,
    deploy: Workspace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lbrec.sync")
    fake = FakeApply(folder=deploy.folder)
    with answering(204, b"") as receiver:
        sync = SyncLoop(
            SyncSource(str(origin.bare)),
            deploy,
            deploy=fake.deploy,
            operator_notify=f"{receiver.url}/lbrec",
        )
        good = origin.commit(GOOD_A, "good")
        assert sync.sync_once().state is SyncState.DEPLOYED
        before = deploy.spec_file.read_text()
        counted = _refused("base_images")

        evil = origin.commit(EVIL_BASE + "notify: {url: 'http://127.0.0.1:9/x'}\n", "evil")
        result = sync.sync_once()
        assert (result.state, result.exit_code) == (SyncState.REFUSED, 6)
        assert result.error is not None
        assert "base_image: 'attacker/onbuild:1' is not allowed by the policy's 'base_images'" in (
            result.error
        )
        assert "notify.url" in result.error
        assert fake.commits == [good]  # nothing applied
        assert deploy.spec_file.read_text() == before  # nothing written
        assert f"commit {evil[:12]}: refused by the policy" in caplog.text
        assert f"still serving {good[:12]}" in caplog.text
        assert _refused("base_images") == counted + 1

        # The loop's pass re-converges the last good commit, as for an invalid one.
        sync._pass()
        assert fake.commits == [good, good]
        # Reported once per commit, not at every pass.
        sync.sync_once()
        assert caplog.text.count(f"commit {evil[:12]}: refused") == 1
        assert _refused("base_images") == counted + 1
        assert flush_notifications(5.0)
    posts = [json.loads(seen.body) for seen in receiver.seen]
    assert [(p["outcome"], p["revision"]["commit"]) for p in posts] == [("refused", evil)]
    assert "base_images" in posts[0]["rules"]


def test_the_policy_pins_the_admin_address(origin: Origin, deploy: Workspace) -> None:
    fake = FakeApply(folder=deploy.folder)
    sync = SyncLoop(SyncSource(str(origin.bare)), deploy, deploy=fake.deploy)
    origin.commit(EVIL_ADMIN, "admin on a port Docker publishes a commit's container on")
    result = sync.sync_once()
    assert result.state is SyncState.REFUSED and fake.calls == []
    assert result.error is not None and "admin: '127.0.0.1:32768'" in result.error
    pinned = Policy(admin=("127.0.0.1:32768",))
    sync = SyncLoop(SyncSource(str(origin.bare)), deploy, deploy=fake.deploy, policy=pinned)
    assert sync.sync_once().state is SyncState.DEPLOYED


def test_a_dockerfile_reached_through_a_symlink_out_is_refused(
    origin: Origin,
    deploy: Workspace,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    (deploy.folder / "api").symlink_to(outside)
    fake = FakeApply(folder=deploy.folder)
    sync = SyncLoop(SyncSource(str(origin.bare)), deploy, deploy=fake.deploy)
    origin.commit("backends:\n  - {name: b, port: 9002, build: {context: api}}\n", "symlink")
    result = sync.sync_once()
    assert result.state is SyncState.REFUSED and fake.calls == []
    assert result.error is not None and "no symlink out" in result.error


def test_once_with_a_policy_file(
    origin: Origin,
    deploy: Workspace,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("base_images: ['attacker/onbuild:1']\n")
    origin.commit(EVIL_BASE, "allowed by this operator")
    fake = FakeApply(folder=deploy.folder)
    options = RuntimeOptions(repo=str(origin.bare), file=deploy.spec_file, once=True)
    assert run_sync(options, engine_for, deploy=fake.deploy) == 6
    assert "refused by the policy" in capsys.readouterr().err
    allowed = RuntimeOptions(repo=str(origin.bare), file=deploy.spec_file, once=True, policy=policy)
    assert run_sync(allowed, engine_for, deploy=fake.deploy) == 0
    policy.write_text("base_imagez: []\n")
    assert run_sync(allowed, engine_for, deploy=fake.deploy) == 2
    assert f"{policy}: base_imagez" in capsys.readouterr().err


def test_validate_with_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "desired-state.yaml"
    spec.write_text(EVIL_ADMIN)
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    assert main(["validate", "-f", str(spec)]) == 0
    assert main(["validate", "-f", str(spec), "--policy", str(policy)]) == 6
    err = capsys.readouterr().err
    assert "admin: '127.0.0.1:32768' is not allowed by the policy's 'admin'" in err
    assert main(["validate", "-f", str(spec), "--policy", str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("dockerfile", ["../../../etc/Dockerfile", "/etc/Dockerfile"])
def test_a_dockerfile_outside_its_context_is_refused(
    origin: Origin, deploy: Workspace, dockerfile: str
) -> None:
    (deploy.folder / "api").mkdir()
    fake = FakeApply(folder=deploy.folder)
    sync = SyncLoop(SyncSource(str(origin.bare)), deploy, deploy=fake.deploy)
    origin.commit(
        "backends:\n  - {name: b, port: 9002, build: "
        f"{{context: api, dockerfile: '{dockerfile}'}}}}\n",
        "a Dockerfile of the host",
    )
    result = sync.sync_once()
    assert result.state is SyncState.REFUSED and fake.calls == []
    assert result.error is not None and "backends[0].build" in result.error
