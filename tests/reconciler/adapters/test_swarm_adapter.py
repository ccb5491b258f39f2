"""SwarmDocker's answers that need no swarm: what it says when the engine is not in one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lbrec.reconciler.adapters.engines.compose import ComposeDocker
from lbrec.reconciler.adapters.engines.swarm import SwarmDocker
from lbrec.reconciler.core.errors import DockerUnavailable


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


class _Swarm:
    """What the manager's API answers about a project's tasks (docker service/node/inspect)."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.nodes = [
            {"ID": "n1", "Description": {"Hostname": "mgr"}, "Status": {"Addr": "0.0.0.0"},
             "ManagerStatus": {"Addr": "198.18.7.10:2377"}},
            {"ID": "n2", "Description": {"Hostname": "w1"}, "Status": {"Addr": "198.18.7.11"}},
        ]  # fmt: skip

    def __call__(self, *args: str) -> str:
        if args[0] == "info":
            return "active true"
        if args[:2] == ("service", "ls"):
            return "p_web-1\n"
        if args[:2] == ("service", "ps"):
            running = "desired-state=running" in args
            return "".join(
                t["ID"] + "\n" for t in self.tasks if not running or t["DesiredState"] == "running"
            )
        if args[:3] == ("inspect", "--type", "task"):
            return json.dumps([t for t in self.tasks if t["ID"] in args[3:]])
        if args[:2] == ("service", "inspect"):
            return json.dumps([{"ID": "s1", "Spec": {"Name": "p_web-1"}}])
        if args[:2] == ("node", "inspect"):
            return json.dumps([n for n in self.nodes if n["ID"] in args[2:]])
        raise AssertionError(args)


def _task(
    tid: str,
    *,
    node: str = "n2",
    state: str = "running",
    desired: str = "running",
    image: str = "acme/web:1.4.2",
    port: int = 30001,
) -> dict[str, Any]:
    labels = {
        "lbrec.backend": "web",
        "lbrec.config-hash": "abc",
        "lbrec.field.image": "acme/web:1.4.2",
        "lbrec.field.build": "",
        "lbrec.field.port": "8080",
    }
    return {
        "ID": tid,
        "ServiceID": "s1",
        "NodeID": node,
        "Slot": int(tid[1:]),
        "DesiredState": desired,
        "Spec": {"ContainerSpec": {"Image": image, "Labels": labels}},
        "Status": {
            "State": state,
            "Timestamp": "2026-12-07T15:00:00Z",
            "ContainerStatus": {"ContainerID": "c" + tid},
            "PortStatus": {
                "Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": port,
                           "PublishMode": "host"}]
            },
        },
    }  # fmt: skip


def _on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, swarm: _Swarm) -> SwarmDocker:
    monkeypatch.setattr(ComposeDocker, "check", lambda self: None)
    adapter = SwarmDocker(folder=tmp_path, project="p", compose_file="docker-compose.yml")
    monkeypatch.setattr(adapter, "_docker", swarm)
    return adapter


def test_tasks_are_found_on_every_node_at_the_node_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Discovery across nodes from the manager's API: no `docker ps` on any engine."""
    swarm = _Swarm([_task("t1", node="n1", port=30001), _task("t2", node="n2", port=30002)])
    one, two = _on(monkeypatch, tmp_path, swarm).observe()
    assert (one.id, one.url, one.labels["com.docker.swarm.node.id"]) == (
        "t1",
        "http://198.18.7.10:30001",
        "mgr 198.18.7.10",
    )  # a manager that says 0.0.0.0: its manager address
    assert (two.url, two.labels["com.docker.swarm.node.id"], two.name) == (
        "http://198.18.7.11:30002",
        "w1 198.18.7.11",
        "p_web-1.2",
    )


def test_ended_and_not_yet_started_tasks_are_no_instances(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    preparing = _task("t3", state="preparing")
    preparing["Status"]["ContainerStatus"] = {}
    swarm = _Swarm([
        _task("t1"),
        _task("t2", state="failed", desired="shutdown"),
        preparing,
        _task("t4", state="starting", port=30004),
    ])  # fmt: skip
    adapter = _on(monkeypatch, tmp_path, swarm)
    seen = {c.id: c for c in adapter.observe()}
    assert sorted(seen) == ["t1", "t4"]
    assert (seen["t4"].state, seen["t4"].health) == ("running", "starting")
    assert {c.id: c.state for c in adapter.inspect(["t2", "t3", "gone"])} == {"t2": "exited"}


def test_a_task_running_another_image_than_deployed_reads_as_a_change_by_hand(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    swarm = _Swarm([_task("t1"), _task("t2", image="acme/web:9@sha256:0123")])
    same, hand = _on(monkeypatch, tmp_path, swarm).observe()
    assert same.labels["lbrec.config-hash"] == "abc"
    assert hand.labels["lbrec.field.image"] == "acme/web:9"  # the plan's reason: 9 -> 1.4.2
    assert hand.labels["lbrec.config-hash"] != "abc"  # not the current version any more


def test_a_task_marked_for_shutdown_is_no_instance_while_its_container_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    swarm = _Swarm([_task("t1"), _task("t2", desired="shutdown")])
    assert [c.id for c in _on(monkeypatch, tmp_path, swarm).observe()] == ["t1"]
