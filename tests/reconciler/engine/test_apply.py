"""apply/converge with a fake Docker port: check mode touches nothing, every rollout is start
first and break last (the pool at each Docker call proves it), a failed image or a broken new
version loses nothing, and a second pass changes nothing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.errors import SpecError
from lbrec.reconciler.core.labels import BuildInfo
from lbrec.reconciler.core.plan import ActionKind
from lbrec.reconciler.core.render import COMPOSE_FILE, POOL_FILE
from lbrec.reconciler.core.report import Report
from lbrec.reconciler.core.spec import DesiredState, parse_spec
from lbrec.reconciler.core.state import ObservedContainer
from lbrec.reconciler.engine.converge import converge

from ..fakes import FAST, TWO, FakeDocker, make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def _setup(folder: Path, text: str) -> tuple[Workspace, DesiredState]:
    (folder / "desired-state.yaml").write_text(FAST + text)
    workspace = Workspace.at(folder / "desired-state.yaml")
    return workspace, parse_spec(FAST + text)


def _edit(folder: Path, text: str) -> None:
    (folder / "desired-state.yaml").write_text(FAST + text)


def _pass(workspace: Workspace, docker: FakeDocker, *, check: bool = False) -> Report:
    docker.desired = workspace.load()
    return converge(workspace, docker, check=check, hooks=docker.hooks())


def _calls(docker: FakeDocker, *skip: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(what, names) for what, names, _ in docker.calls if what not in skip]


def _pool(folder: Path) -> list[dict[str, object]]:
    backends: list[dict[str, object]] = json.loads((folder / POOL_FILE).read_text())["backends"]
    return backends


def test_check_mode_makes_no_call_and_writes_nothing(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    report = _pass(workspace, docker, check=True)
    assert [a.kind for a in report.plan.changes] == [ActionKind.CREATE, ActionKind.CREATE]
    assert docker.calls == []
    assert not (folder / POOL_FILE).exists() and not (folder / COMPOSE_FILE).exists()
    assert report.outcomes == ()


def test_create_routes_each_instance_only_once_it_is_healthy(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    report = _pass(workspace, docker)
    assert _calls(docker, "confirm") == [
        ("build", ("a",)),
        ("scale", ("a", "1")),
        ("scale", ("b", "1")),
    ]
    assert all(n[0] not in routed for what, n, routed in docker.calls if what == "scale")
    assert report.routed == ("a", "b") and not report.failed
    assert report.recap() == {
        "ok": 2,
        "changed": 2,
        "unchanged": 0,
        "removed": 0,
        "failed": 0,
        "rolled_back": 0,
        "deferred": 0,
        "repaired": 0,
        "preempted": 0,
    }
    pool = _pool(folder)
    assert [(b["name"], b["url"], b["instance"]) for b in pool] == [
        ("a", "http://127.0.0.1:40001", "p-a-1"),
        ("b", "http://127.0.0.1:40002", "p-b-1"),
    ]


def test_second_pass_is_a_no_op(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    ids = set(docker.containers)
    stamp = (folder / POOL_FILE).stat().st_mtime_ns
    report = _pass(workspace, docker)
    assert report.plan.in_sync and _calls(docker, "confirm") == []
    assert set(docker.containers) == ids
    assert (folder / POOL_FILE).stat().st_mtime_ns == stamp  # not even rewritten


def test_remove_leaves_the_pool_before_the_container_goes(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    _edit(folder, "backends:\n  - {name: a, port: 9101, weight: 1}\n")
    confirmed: list[str] = []
    docker.desired = workspace.load()
    converge(workspace, docker, check=False, hooks=docker.hooks(confirmed))
    calls = [(w, n, r) for w, n, r in docker.calls if w != "confirm"]
    assert calls == [("stop_remove", ("b-2",), ("a",))]  # b already out of the pool
    assert len(confirmed) == 1  # the proxy confirmed before the container went


def test_reweight_touches_no_container(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    _edit(folder, TWO.replace("weight: 2", "weight: 7"))
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.REWEIGHT]
    assert _calls(docker, "confirm") == []
    assert _pool(folder)[1]["weight"] == 7


def test_code_change_replaces_start_first_then_drains(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    (folder / "backend/app.py").write_text("# v2\n" + (folder / "backend/app.py").read_text())
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.RECREATE] * 2
    assert not report.failed
    calls = [(w, n, r) for w, n, r in docker.calls if w != "confirm"]
    # a: new instance beside the old one (both routed), then the old one drained and removed
    assert calls[0][0] == "build"
    assert calls[1] == ("scale", ("a", "2"), ("a", "b"))
    assert calls[2] == ("drain", ("http://127.0.0.1:40001",), ("a", "b"))
    assert calls[3] == ("stop_remove", ("a-1",), ("a", "b"))
    assert calls[4] == ("scale", ("b", "2"), ("a", "b"))
    assert [c.id for c in docker.observe()] == ["a-3", "b-4"]
    assert [b["url"] for b in _pool(folder)] == ["http://127.0.0.1:40003", "http://127.0.0.1:40004"]
    assert _pass(workspace, docker).plan.in_sync


def test_the_pool_never_loses_a_backend_during_a_rollout(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO.replace("weight: 2}", "weight: 2, replicas: 3}"))
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    _edit(folder, TWO.replace("weight: 2}", "weight: 2, replicas: 3, env: {V: '2'}}"))
    report = _pass(workspace, docker)
    assert not report.failed
    for _what, _names, routed in docker.calls:
        assert routed.count("a") == 1 and routed.count("b") >= 3  # never fewer than before
    assert sum(1 for w, _, _ in docker.calls if w == "scale") == 3  # max_parallel 1
    assert len(docker.of("b")) == 3


def test_max_parallel_replaces_in_batches(folder: Path) -> None:
    rollout = "rollout: {max_parallel: 2, min_healthy_time: 0, healthy_deadline: 1s}"
    text = f"backends:\n  - {{name: b, port: 9102, weight: 2, replicas: 3, {rollout}}}\n"
    workspace, desired = _setup(folder, text)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    _edit(folder, text.replace("replicas: 3", "replicas: 3, command: [x]"))
    _pass(workspace, docker)
    scales = [n for w, n, _ in docker.calls if w == "scale"]
    assert scales == [("b", "5"), ("b", "4")]  # 3 + 2 new; then (3 - 2 + 2) + 1 new
    assert len(docker.of("b")) == 3


def test_replicas_scale_without_touching_the_instances_that_stay(folder: Path) -> None:
    text = "backends:\n  - {name: b, port: 9102, weight: 2}\n"
    workspace, desired = _setup(folder, text)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    first = set(docker.containers)
    _edit(folder, text.replace("weight: 2", "weight: 2, replicas: 3"))
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.SCALE]
    assert first < set(docker.containers) and len(docker.containers) == 3
    assert [w for w, _, _ in docker.calls].count("scale") == 2  # one to create, then + 2 at once
    _edit(folder, text)
    docker.calls.clear()
    report = _pass(workspace, docker)
    assert [a.kind for a in report.plan.changes] == [ActionKind.SCALE]
    assert set(docker.containers) == first  # the routed, oldest instance stays
    assert [w for w, _, _ in docker.calls if w != "confirm"] == ["drain", "stop_remove"]
    assert len(_pool(folder)) == 1


def test_failed_build_keeps_the_old_containers_routed(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    before = dict(docker.containers)
    docker.calls.clear()
    docker.fail_build = True
    _edit(folder, "base_image: nope:1\n" + TWO)
    report = _pass(workspace, docker)
    assert {o.action.backend for o in report.failed} == {"a", "b"}
    assert docker.containers == before
    assert _calls(docker, "confirm") == [("build", ("a",))]
    assert report.routed == ("a", "b")
    assert report.recap()["failed"] == 2


def test_failed_pull_changes_nothing_of_that_backend(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    before = dict(docker.containers)
    docker.fail_pull = True
    docker.calls.clear()
    _edit(folder, TWO.replace("weight: 2}", "weight: 2, image: 'registry.example/app:9'}"))
    report = _pass(workspace, docker)
    assert [o.error for o in report.failed] == ["pulling registry.example/app:9 failed: not found"]
    assert docker.containers == before
    assert _calls(docker, "confirm") == [("pull", ("registry.example/app:9",))]


def test_broken_new_version_is_rolled_back_and_the_old_keeps_serving(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    old_b = docker.of("b")[0].id
    docker.calls.clear()
    docker.unhealthy = {"b"}
    _edit(folder, TWO.replace("weight: 2}", "weight: 2, env: {BROKEN: '1'}}"))
    report = _pass(workspace, docker)
    assert [o.action.backend for o in report.failed] == ["b"]
    (failure,) = report.failed
    assert failure.rolled_back
    assert failure.error is not None and "rolled back" in failure.error
    assert "answered 500" in failure.error and "Traceback: boom" in failure.error
    assert [c.id for c in docker.of("b")] == [old_b]  # the new one was removed
    assert [b["url"] for b in _pool(folder) if b["name"] == "b"] == ["http://127.0.0.1:40002"]
    assert report.recap()["rolled_back"] == 1 and report.recap()["failed"] == 1
    # the broken new instance was never routed
    assert all(r.count("b") == 1 for _, _, r in docker.calls)


def test_new_instance_that_exits_is_reported_with_its_log(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired, exits={"b"})
    report = _pass(workspace, docker)
    assert report.routed == ("a",)
    (failure,) = report.failed
    assert failure.error is not None and "exited" in failure.error
    assert "Traceback: boom" in failure.error
    assert not failure.rolled_back  # nothing older to fall back to
    assert docker.of("b") == []


def test_drift_stopped_container_is_started_not_recreated(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    (a,) = docker.of("a")
    docker.containers[a.id] = ObservedContainer(
        id=a.id, backend="a", state="exited", health=None, labels=a.labels, name=a.name
    )
    docker.calls.clear()
    report = _pass(workspace, docker)
    assert [x.kind for x in report.plan.changes] == [ActionKind.START]
    calls = [(w, n, r) for w, n, r in docker.calls if w != "confirm"]
    assert calls == [("start", (a.id,), ("b",))]  # a was out of the pool while stopped
    assert [c.id for c in docker.of("a")] == [a.id]
    assert {b["name"] for b in _pool(folder)} == {"a", "b"}


def test_a_restarted_current_instance_is_routed_without_min_healthy_time(folder: Path) -> None:
    """min_healthy_time proves a new version; the version already serving, started again, is
    routed on its first healthy answer (a new version still waits the whole time)."""
    slow = "rollout: {min_healthy_time: 30s, healthy_deadline: 120s, drain_timeout: 1s}\n"
    (folder / "desired-state.yaml").write_text(slow + TWO)
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    hooks = docker.hooks()
    assert not converge(workspace, docker, check=False, hooks=hooks).failed
    first = hooks.clock()
    assert first >= 30.0  # the first deploy waited min_healthy_time
    (a,) = docker.of("a")
    docker.containers[a.id] = ObservedContainer(
        id=a.id, backend="a", state="exited", health=None, labels=a.labels, name=a.name
    )
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert [x.kind for x in report.plan.changes] == [ActionKind.START] and not report.failed
    assert hooks.clock() - first < 30.0  # routed at once, not after another 30 s
    assert {b["name"] for b in _pool(folder)} == {"a", "b"}


def test_unhealthy_running_instance_is_replaced_start_first(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    (b,) = docker.of("b")
    docker.containers[b.id] = ObservedContainer(
        id=b.id,
        backend="b",
        state="running",
        health="unhealthy",
        labels=b.labels,
        name=b.name,
        endpoint=b.endpoint,
    )
    report = _pass(workspace, docker)
    (action,) = report.plan.changes
    assert action.kind is ActionKind.RECREATE and action.reason == "container unhealthy"
    assert b.id not in docker.containers and len(docker.of("b")) == 1


def test_build_info_needs_the_dockerfile(tmp_path: Path) -> None:
    workspace, desired = _setup(tmp_path, TWO)
    with pytest.raises(SpecError, match=r"Dockerfile\.backend: not found"):
        workspace.build_info(desired)


def test_image_backends_need_no_dockerfile(tmp_path: Path) -> None:
    workspace, desired = _setup(tmp_path, "backends:\n  - {name: w, port: 8000, image: 'x:1'}\n")
    assert workspace.build_info(desired).context_digest == ""


def test_build_context_must_exist(tmp_path: Path) -> None:
    text = "backends:\n  - {name: api, port: 8100, build: {context: api}}\n"
    workspace, desired = _setup(tmp_path, text)
    with pytest.raises(SpecError, match=r"backends\[0\]\.build: .*api/Dockerfile not found"):
        workspace.build_info(desired)
    (tmp_path / "api").mkdir()
    (tmp_path / "api/Dockerfile").write_text("FROM scratch\n")
    first = workspace.build_info(desired).digest_of(desired.backends[0])
    (tmp_path / "api/main.py").write_text("print(1)\n")
    assert workspace.build_info(desired).digest_of(desired.backends[0]) != first


def test_existing_image_is_not_rebuilt(folder: Path) -> None:
    from lbrec.reconciler.core.render import image_tag

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


def test_port_change_is_a_start_first_replace(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    _edit(folder, TWO.replace("9102", "9202"))
    report = _pass(workspace, docker)
    (action,) = report.plan.changes
    assert action.kind is ActionKind.RECREATE and action.reason == "port 9102 -> 9202"
    assert all(r in (("a", "b"), ("a", "b", "b")) for _, _, r in docker.calls)
    assert [c.id for c in docker.of("b")] == ["b-3"]


def test_a_waiting_change_preempts_a_slow_rollout(folder: Path) -> None:
    """An emergency edit must not queue behind a backend that hangs: the pass removes the batch
    it made, keeps the old instances serving, and ends at once; the rest is not started."""
    text = TWO + "  - {name: c, port: 9103, weight: 1}\n"
    workspace, desired = _setup(folder, text)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    before = {c.backend: c.id for c in docker.observe()}
    docker.unhealthy = {"a", "c"}  # a's new version would wait until its deadline
    _edit(
        folder,
        text.replace(
            "{name: a, port: 9101, weight: 1}", "{name: a, port: 9101, weight: 1, env: {V: '2'}}"
        ).replace("weight: 1}\n", "weight: 1, env: {V: '2'}}\n"),
    )
    docker.desired = workspace.load()
    hooks = docker.hooks()
    checks: list[int] = []

    def preempted() -> str | None:
        checks.append(1)
        return "pid 42 (lbrec add) is waiting for the lock" if len(checks) > 3 else None

    hooks.preempted = preempted
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert not report.failed  # cut short is not failed (issue 25 point 4)
    errors = {o.action.backend: o.error for o in report.cut_short}
    assert set(errors) == {"a", "c"}
    assert "preempted (pid 42 (lbrec add) is waiting for the lock)" in (errors["a"] or "")
    assert "not started" in (errors["c"] or "")
    assert {c.backend: c.id for c in docker.observe()} == before  # a's new batch was removed
    assert {b["name"] for b in _pool(folder)} == {"a", "b", "c"}  # the old ones keep serving


def test_a_probe_that_hangs_does_not_hold_a_preempted_pass(folder: Path) -> None:
    """An instance that accepts and never answers holds its probe for the whole timeout; the
    pass still notices a waiting edit while the probe hangs, and yields."""
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    _edit(folder, TWO.replace("weight: 2}", "weight: 2, env: {V: '2'}}"))
    docker.desired = workspace.load()
    hooks = docker.hooks()
    probing, release, returned = threading.Event(), threading.Event(), threading.Event()

    def hanging_probe(url: str, timeout: float) -> str | None:
        probing.set()
        release.wait(10)  # bounded: released by the test as soon as the pass has yielded
        returned.set()
        return "timed out"

    waiting = "pid 42 (lbrec add) is waiting for the lock"
    hooks.probe = hanging_probe
    hooks.preempted = lambda: waiting if probing.is_set() else None
    try:
        report = converge(workspace, docker, check=False, hooks=hooks)
        yielded_while_hanging = not returned.is_set()
    finally:
        release.set()
    assert yielded_while_hanging  # the pass ended while the probe was still blocked
    assert report.preempted
    (failure,) = report.cut_short
    assert failure.action.backend == "b" and "preempted" in (failure.error or "")


def test_a_crash_looping_new_instance_fails_at_once_with_its_log(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired, crashloop={"b"})
    hooks = docker.hooks()
    docker.desired = workspace.load()
    report = converge(workspace, docker, check=False, hooks=hooks)
    (failure,) = report.failed
    assert failure.error is not None
    assert "exited and restarts: Traceback: boom" in failure.error
    assert hooks.clock() < 1.0  # failed at the first look, not at the deadline


def test_the_recap_names_a_failed_backend_once() -> None:
    from lbrec.reconciler.core.output import Style, format_recap
    from lbrec.reconciler.core.plan import Action, Plan
    from lbrec.reconciler.core.report import Outcome

    action = Action(ActionKind.RECREATE, backend="web", reason="image a -> b")
    report = Report(
        plan=Plan(actions=(action,)),
        check=False,
        outcomes=(
            Outcome(action, ok=False, error="web: new version not healthy", rolled_back=True),
        ),
    )
    text = format_recap(report, Style(color=False))
    assert "FAILED web: new version not healthy" in text and "web: web" not in text
    assert "rolled_back=1" in text


def test_a_first_deploy_of_many_backends_waits_once(folder: Path) -> None:
    rollout = "rollout: {min_healthy_time: 3s, healthy_deadline: 60s}\n"
    lines = "".join(f"  - {{name: b{i}, port: {9200 + i}}}\n" for i in range(20))
    (folder / "desired-state.yaml").write_text(rollout + "backends:\n" + lines)
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    hooks = docker.hooks()
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert not report.failed and len(report.routed) == 20
    assert hooks.clock() < 2 * 3.0  # one wait of min_healthy_time for all, not 20
    assert sum(1 for what, _, _ in docker.calls if what == "confirm") <= 2


def test_backends_roll_out_side_by_side_and_never_leave_the_pool(folder: Path) -> None:
    text = "".join(f"  - {{name: b{i}, port: {9300 + i}, replicas: 2}}\n" for i in range(4))
    workspace, desired = _setup(folder, "backends:\n" + text)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.calls.clear()
    _edit(folder, "backends:\n" + text.replace("replicas: 2}", "replicas: 2, env: {V: '2'}}"))
    docker.desired = workspace.load()
    report = converge(workspace, docker, check=False, hooks=docker.hooks(parallel=True))
    assert not report.failed and len(report.routed) == 4
    for _what, _names, routed in docker.calls:
        for i in range(4):
            assert routed.count(f"b{i}") >= 2  # never fewer instances than before, any order
    assert all(len(docker.of(f"b{i}")) == 2 for i in range(4))
    assert _pass(workspace, docker).plan.in_sync


def test_an_edit_that_preempted_a_pass_defers_the_other_backends(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    before = set(docker.containers)
    _edit(
        folder,
        TWO.replace("weight: 1}", "weight: 0}").replace("weight: 2}", "weight: 2, env: {V: '2'}}"),
    )
    docker.desired = workspace.load()
    report = converge(workspace, docker, check=False, hooks=docker.hooks(), only={"a"})
    assert [o.action.backend for o in report.deferred] == ["b"] and not report.failed
    assert set(docker.containers) == before  # b's replace was left for later
    assert {b["name"]: b["weight"] for b in _pool(folder)} == {"a": 0, "b": 2}
    assert report.recap()["deferred"] == 1 and report.recap()["failed"] == 0
    assert not converge(workspace, docker, check=True, hooks=docker.hooks()).plan.in_sync


def test_a_loop_holds_a_version_that_was_rolled_back_until_it_changes(folder: Path) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    _pass(workspace, docker)
    docker.unhealthy = {"b"}
    broken = TWO.replace("weight: 2}", "weight: 2, env: {V: broken}}")
    _edit(folder, broken)
    docker.desired = workspace.load()
    first = converge(workspace, docker, check=False, hooks=docker.hooks(), hold_rolled_back=True)
    assert first.failed[0].rolled_back
    docker.calls.clear()
    again = converge(workspace, docker, check=False, hooks=docker.hooks(), hold_rolled_back=True)
    (held,) = again.deferred
    assert held.action.backend == "b" and held.detail.startswith(
        "held: this version was rolled back"
    )
    assert not again.failed and "scale" not in [w for w, _, _ in docker.calls]  # not retried
    docker.unhealthy = set()
    _edit(folder, broken.replace("V: broken", "V: fixed"))  # a new version: retried at once
    docker.desired = workspace.load()
    fixed = converge(workspace, docker, check=False, hooks=docker.hooks(), hold_rolled_back=True)
    assert not fixed.failed and not fixed.deferred
    from lbrec.reconciler.adapters.rollout_control import rolled_back

    assert rolled_back(folder) == {}  # converged: forgotten
