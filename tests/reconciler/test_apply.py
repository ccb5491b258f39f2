"""apply/converge with a fake Docker port: check mode touches nothing, the order is make before
break, a failed build loses nothing, and a second pass changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.apply import converge
from reconciler.errors import SpecError
from reconciler.labels import BuildInfo
from reconciler.plan import ActionKind
from reconciler.render import COMPOSE_FILE, POOL_FILE
from reconciler.spec import DesiredState, parse_spec
from reconciler.state import ObservedContainer
from reconciler.workspace import Workspace

from .fakes import TWO, FakeDocker, make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def _setup(folder: Path, text: str) -> tuple[Workspace, DesiredState]:
    (folder / "desired-state.yaml").write_text(text)
    workspace = Workspace.at(folder / "desired-state.yaml")
    return workspace, parse_spec(text)


def _pass(workspace: Workspace, docker: FakeDocker, *, check: bool = False):  # type: ignore[no-untyped-def]
    docker.desired = workspace.load()
    return converge(workspace, docker, check=check, confirm=lambda _g: None)


def test_check_mode_makes_no_call_and_writes_nothing(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    report = _pass(workspace, docker, check=True)
    assert [a.kind for a in report.plan.changes] == [ActionKind.CREATE, ActionKind.CREATE]
    assert docker.calls == []
    assert not (folder / POOL_FILE).exists() and not (folder / COMPOSE_FILE).exists()
    assert report.outcomes == ()


def test_create_routes_only_after_the_container_is_healthy(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    report = _pass(workspace, docker)
    assert [(what, names) for what, names, _ in docker.calls] == [
        ("build", ("a",)),
        ("up", ("a",)),
        ("up", ("b",)),
        ("wait", ("a", "b")),
    ]
    assert all(routed == () for _, _, routed in docker.calls)  # nothing routed before healthy
    assert report.routed == ("a", "b") and not report.failed
    assert report.recap() == {"ok": 2, "changed": 2, "unchanged": 0, "removed": 0, "failed": 0}


def test_second_pass_is_a_no_op(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    ids = {n: c.id for n, c in docker.containers.items()}
    stamp = (folder / POOL_FILE).stat().st_mtime_ns
    report = _pass(workspace, docker)
    assert report.plan.in_sync and docker.calls == []
    assert {n: c.id for n, c in docker.containers.items()} == ids
    assert (folder / POOL_FILE).stat().st_mtime_ns == stamp  # not even rewritten


def test_remove_leaves_the_pool_before_the_container_goes(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    (folder / "desired-state.yaml").write_text("backends:\n  - {name: a, port: 9101, weight: 1}\n")
    confirmed: list[str] = []
    docker.desired = workspace.load()
    converge(workspace, docker, check=False, confirm=lambda g: bool(confirmed.append(g)) or True)
    assert docker.calls == [("remove", ("b-2",), ("a",))]  # b already out of the pool
    assert len(confirmed) == 1  # the proxy was asked to confirm before the removal


def test_reweight_touches_no_container(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    (folder / "desired-state.yaml").write_text(TWO.replace("weight: 2", "weight: 7"))
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.REWEIGHT]
    assert docker.calls == []
    assert json.loads((folder / POOL_FILE).read_text())["backends"][1]["weight"] == 7


def test_failed_build_keeps_the_old_containers_routed(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    before = dict(docker.containers)
    docker.calls.clear()
    docker.fail_build = True
    (folder / "desired-state.yaml").write_text("base_image: nope:1\n" + TWO)
    report = _pass(workspace, docker)
    assert {o.action.backend for o in report.failed} == {"a", "b"}
    assert docker.containers == before
    assert [what for what, _, _ in docker.calls] == ["build"]
    assert report.routed == ("a", "b")
    assert report.recap()["failed"] == 2


def test_unhealthy_new_backend_stays_out_of_the_pool(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired, unhealthy={"b"})
    report = _pass(workspace, docker)
    assert report.routed == ("a",)
    assert [o.error for o in report.failed] == ["b: not healthy after 1s"]
    docker.unhealthy.clear()
    docker.containers["b"] = ObservedContainer(
        id="b-x",
        backend="b",
        state="running",
        health="unhealthy",
        labels=docker.containers["b"].labels,
    )
    report = _pass(workspace, docker)  # the next pass converges
    assert report.routed == ("a", "b") and not report.failed


def test_drift_stopped_container_is_started_not_recreated(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    a = docker.containers["a"]
    docker.containers["a"] = ObservedContainer(
        id=a.id, backend="a", state="exited", health=None, labels=a.labels
    )
    docker.calls.clear()
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.START]
    assert [(w, n) for w, n, _ in docker.calls] == [("start", (a.id,)), ("wait", ("a",))]
    assert docker.containers["a"].id == a.id
    assert docker.calls[0][2] == ("b",)  # a was out of the pool while stopped


def test_build_info_needs_the_dockerfile(tmp_path: Path) -> None:
    workspace, desired = _setup(tmp_path, TWO)
    with pytest.raises(SpecError, match=r"Dockerfile\.backend: not found"):
        workspace.build_info(desired)


def test_existing_image_is_not_rebuilt(folder: Path) -> None:
    from reconciler.render import image_tag

    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    docker.images.add(image_tag(desired, workspace.build_info(desired)))
    _pass(workspace, docker)
    assert "build" not in [what for what, _, _ in docker.calls]


def test_label_fields_of_fake_match_build(folder: Path) -> None:
    """Guard for the fake itself: its containers must look converged to the planner."""
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    assert _pass(workspace, docker).plan.in_sync
    assert isinstance(workspace.build_info(desired), BuildInfo)


def test_port_change_stops_routing_before_the_new_port_is_up(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    (folder / "desired-state.yaml").write_text(TWO.replace("9102", "9202"))
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.RECREATE]
    assert docker.calls[0][0] == "build" and docker.calls[0][2] == ("a",)  # b out already
    assert [(w, n) for w, n, _ in docker.calls[1:]] == [
        ("remove", ("b-2",)),
        ("up", ("b",)),
        ("wait", ("b",)),
    ]
    pool = json.loads((folder / POOL_FILE).read_text())["backends"]
    assert pool[1] == {"name": "b", "url": "http://127.0.0.1:9202", "weight": 2}
