"""SwarmDocker's answers that need no swarm: what it says when the engine is not in one."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbrec.reconciler.adapters.engines.compose import ComposeDocker
from lbrec.reconciler.adapters.engines.swarm import SwarmDocker
from lbrec.reconciler.core.errors import DockerUnavailable
from lbrec.reconciler.core.state import ObservedContainer


def _adapter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, info: str, running: str = "t1"
) -> SwarmDocker:
    """``info``: what `docker info` says; ``running``: the tasks Swarm wants running."""
    monkeypatch.setattr(ComposeDocker, "check", lambda self: None)  # the engine answers
    adapter = SwarmDocker(folder=tmp_path, project="p", compose_file="docker-compose.yml")
    monkeypatch.setattr(adapter, "_docker", lambda *args: info if args[0] == "info" else running)
    return adapter


@pytest.mark.parametrize(
    ("info", "words"),
    [
        ("inactive false", ["not in a swarm", "docker swarm init"]),
        ("active false", ["not a manager", "manager node"]),
    ],
)
def test_no_swarm_or_no_manager_is_an_engine_error_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, info: str, words: list[str]
) -> None:
    adapter = _adapter(monkeypatch, tmp_path, info)
    with pytest.raises(DockerUnavailable) as err:
        adapter.check()
    assert err.value.exit_code == 3
    text = err.value.message + " " + (err.value.hint or "")
    assert all(w in text for w in words), text


def test_a_manager_of_an_active_swarm_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _adapter(monkeypatch, tmp_path, "active true").check()


def test_ended_task_containers_are_history_not_instances(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    task = {
        "com.docker.swarm.task.id": "t1",
        "com.docker.swarm.service.name": "p_web-1",
        "lbrec.backend": "web",
    }
    seen = (
        ObservedContainer(id="a", backend="web", state="running", health=None, labels=task),
        ObservedContainer(id="b", backend="web", state="exited", health=None, labels=task),
        ObservedContainer(id="c", backend="web", state="exited", health=None, labels={}),
    )
    monkeypatch.setattr(ComposeDocker, "observe", lambda self: seen)
    adapter = _adapter(monkeypatch, tmp_path, "active true")
    assert [c.id for c in adapter.observe()] == ["a", "c"]  # a plain container stays visible


def test_a_task_running_another_image_than_deployed_reads_as_a_change_by_hand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    task = {
        "com.docker.swarm.task.id": "t1",
        "com.docker.swarm.service.name": "p_web-1",
        "lbrec.backend": "web",
        "lbrec.config-hash": "abc",
        "lbrec.field.image": "acme/web:1.4.2",
        "lbrec.field.build": "",
    }
    seen = (
        ObservedContainer(
            id="same", backend="web", state="running", health=None, labels=task,
            image="acme/web:1.4.2",
        ),
        ObservedContainer(
            id="hand", backend="web", state="running", health=None, labels=task,
            image="acme/web:9@sha256:0123",
        ),
    )  # fmt: skip
    monkeypatch.setattr(ComposeDocker, "observe", lambda self: seen)
    same, hand = _adapter(monkeypatch, tmp_path, "active true").observe()
    assert same.labels == task
    assert hand.labels["lbrec.field.image"] == "acme/web:9"  # the plan's reason: 9 -> 1.4.2
    assert hand.labels["lbrec.config-hash"] != "abc"  # not the current version any more


def test_a_task_marked_for_shutdown_is_no_instance_while_its_container_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def task(tid: str) -> dict[str, str]:
        return {"com.docker.swarm.task.id": tid, "com.docker.swarm.service.name": "p_web-1"}

    seen = (
        ObservedContainer(id="a", backend="web", state="running", health=None, labels=task("t1")),
        ObservedContainer(id="b", backend="web", state="running", health=None, labels=task("t2")),
    )
    monkeypatch.setattr(ComposeDocker, "observe", lambda self: seen)
    adapter = _adapter(monkeypatch, tmp_path, "active true", running="t1\n")
    assert [c.id for c in adapter.observe()] == ["a"]  # t2 is shutting down: out of the pool
