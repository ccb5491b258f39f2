"""Issue 25 point 4: every pass says what it did. A held version is `deferred` (never
`deployed`, never sent), drift brought back is `repaired`, a crash loop gets a back-off and then
a hold with one notification, and a pass cut short by a newer edit is `preempted`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.repair_records import RepairFiles
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.audit import outcome_of, pass_record
from lbrec.reconciler.core.plan import Action, ActionKind, Plan
from lbrec.reconciler.core.report import Outcome, Report
from lbrec.reconciler.core.state import ObservedContainer
from lbrec.reconciler.engine.converge import converge
from lbrec.reconciler.runtime.loop import ControlLoop
from lbrec.reconciler.runtime.metrics import LoopMetrics

from ..fakes import FAST, TWO, FakeDocker, make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def _docker(folder: Path, text: str = TWO) -> tuple[Workspace, FakeDocker]:
    (folder / "desired-state.yaml").write_text(FAST + text)
    workspace = Workspace.at(folder / "desired-state.yaml")
    return workspace, FakeDocker(workspace, workspace.load())


def _loop_pass(workspace: Workspace, docker: FakeDocker, clock: list[float]) -> Report:
    """One pass as a loop runs it (holds on), on a wall clock the test moves."""
    docker.desired = workspace.load()
    hooks = docker.hooks()
    hooks.wall = lambda: clock[0]
    hooks.records = RepairFiles(workspace.folder)
    return converge(workspace, docker, check=False, hooks=hooks, hold_rolled_back=True)


def _crash(docker: FakeDocker, backend: str) -> None:
    """The backend's instance died and Docker restarts it (state restarting)."""
    (c,) = docker.of(backend)
    docker.containers[c.id] = ObservedContainer(
        id=c.id, backend=backend, state="restarting", health=None, labels=c.labels, name=c.name
    )


def test_a_held_version_is_deferred_not_deployed(folder: Path) -> None:
    workspace, docker = _docker(folder)
    clock = [1000.0]
    _loop_pass(workspace, docker, clock)
    docker.unhealthy = {"b"}
    (folder / "desired-state.yaml").write_text(
        FAST + TWO.replace("weight: 2}", "weight: 2, env: {V: broken}}")
    )
    assert outcome_of(_loop_pass(workspace, docker, clock)) == "rolled_back"
    again = _loop_pass(workspace, docker, clock)
    assert again.deferred and again.changed  # the plan still wants the held version
    assert outcome_of(again) == "deferred"  # was "deployed", at every resync
    record = pass_record(again, command="lbrec watch", started=0.0, ended=1.0)
    assert record["outcome"] == "deferred" and "held" in record["deferred"]["b"]


def test_drift_brought_back_is_repaired_and_a_new_desired_state_is_deployed(
    folder: Path,
) -> None:
    workspace, docker = _docker(folder)
    clock = [1000.0]
    assert outcome_of(_loop_pass(workspace, docker, clock)) == "deployed"
    (a,) = docker.of("a")
    docker.containers[a.id] = ObservedContainer(
        id=a.id, backend="a", state="exited", health=None, labels=a.labels, name=a.name
    )
    repaired = _loop_pass(workspace, docker, clock)
    assert outcome_of(repaired) == "repaired"
    assert repaired.recap()["repaired"] == 1
    docker.containers.pop(next(iter(c.id for c in docker.of("b"))))  # removed by hand
    clock[0] += 1000
    assert outcome_of(_loop_pass(workspace, docker, clock)) == "repaired"
    (folder / "desired-state.yaml").write_text(FAST + TWO.replace("weight: 2}", "weight: 5}"))
    assert outcome_of(_loop_pass(workspace, docker, clock)) == "deployed"
    (folder / "desired-state.yaml").write_text(
        FAST + TWO.replace("weight: 2}", "weight: 5, replicas: 2}")
    )
    assert outcome_of(_loop_pass(workspace, docker, clock)) == "deployed"


def test_a_crash_loop_backs_off_then_is_held_with_one_failure(folder: Path) -> None:
    workspace, docker = _docker(folder)
    clock = [1000.0]
    _loop_pass(workspace, docker, clock)
    outcomes: list[str] = []
    waits: list[float] = []
    for _ in range(12):
        _crash(docker, "a")
        report = _loop_pass(workspace, docker, clock)
        outcomes.append(outcome_of(report))
        if report.retry_in is not None:  # the loop comes back then (not at the next event)
            waits.append(report.retry_in)
            clock[0] += report.retry_in
        else:
            clock[0] += 0.5  # it crashes half a second after each restart
    assert outcomes.count("failed") == 1  # the hold: one failure, one notification
    assert outcomes.count("repaired") == 5  # restarts before the hold
    held = outcomes.index("failed")
    assert set(outcomes[held + 1 :]) == {"deferred"}  # then never restarted again
    assert outcomes[:held].count("deferred") == 4  # each restart after the first waited
    assert waits == sorted(waits) and waits[-1] > waits[0]  # a growing back-off
    last = _loop_pass(workspace, docker, clock)
    (deferred,) = last.deferred
    assert "crash loop" in deferred.detail and "lbrec apply" in deferred.detail
    # a person asks: `lbrec apply` (no hold) starts it again
    hooks = docker.hooks()
    hooks.records = RepairFiles(workspace.folder)
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert outcome_of(report) == "repaired" and not report.deferred


def test_a_crash_loop_is_not_counted_across_an_engine_restart(folder: Path) -> None:
    from lbrec.reconciler.adapters import engine_epoch

    workspace, docker = _docker(folder)
    clock = [1000.0]
    _loop_pass(workspace, docker, clock)
    for _ in range(8):  # the engine went away and came back, each time stopping everything
        engine_epoch.freeze_pool(folder, workspace.pool_file, "test")
        _crash(docker, "a")
        clock[0] += 10
        assert outcome_of(_loop_pass(workspace, docker, clock)) == "repaired"


def _preempted() -> Report:
    action = Action(ActionKind.RECREATE, "b")
    why = "b: preempted (lbrec add is waiting for the lock); the next pass carries on"
    return Report(
        plan=Plan(actions=(action,)),
        check=False,
        outcomes=(Outcome(action, ok=False, error=why, preempted=True),),
    )


def test_a_preempted_pass_is_neither_failed_nor_logged_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = LoopMetrics()
    loop = ControlLoop(_preempted, name="t25", resync=None, metrics=metrics, folder=tmp_path)
    caplog.set_level(logging.INFO)
    loop._one_pass("file modified")
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'lbrec_reconciler_passes_total{loop="t25",outcome="preempted"} 1.0' in text
    assert 'lbrec_reconciler_passes_total{loop="t25",outcome="failed"} 0.0' in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "preempted" in caplog.text
    report = _preempted()
    assert outcome_of(report) == "preempted" and not report.failed
    assert report.recap()["failed"] == 0 and report.recap()["preempted"] == 1
