"""engine: swarm when a node is lost (issue 24): its tasks are no instances, Swarm's errors
name the node by its address, and a failed refill never takes a routed service down.

The manager's answers are canned here (what `docker node/service/inspect` print); the same
paths run on a real 3-node swarm in tests/integration/test_swarm_nodes.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lbrec.reconciler.adapters.engines.compose import ComposeDocker
from lbrec.reconciler.adapters.engines.swarm import SwarmDocker

_LABELS = {
    "lbrec.backend": "web",
    "lbrec.config-hash": "abc",
    "lbrec.field.image": "acme/web:1",
    "lbrec.field.build": "",
    "lbrec.field.port": "8080",
}


def _node(nid: str, address: str, state: str = "ready", availability: str = "active") -> Any:
    return {
        "ID": nid,
        "Description": {"Hostname": "vm"},  # namespaces share the hostname: the address tells
        "Status": {"State": state, "Addr": address},
        "Spec": {"Availability": availability},
    }


def _task(
    tid: str, node: str, service: str = "s1", *, state: str = "running", err: str = ""
) -> Any:
    return {
        "ID": tid,
        "ServiceID": service,
        "NodeID": node,
        "Slot": int(tid[1:]),
        "DesiredState": "running",
        "Spec": {"ContainerSpec": {"Image": "acme/web:1@sha256:0a", "Labels": dict(_LABELS)}},
        "Status": {
            "State": state,
            "Err": err,
            "ContainerStatus": {"ContainerID": "c" + tid},
            "PortStatus": {"Ports": [{"TargetPort": 8080, "PublishedPort": 30000 + int(tid[1:])}]},
        },
    }


class _Manager:
    def __init__(self, tasks: list[Any], nodes: list[Any]) -> None:
        self.tasks, self.nodes = tasks, nodes
        self.services = {"s1": "p_web-1", "s2": "p_web-2"}
        self.removed: list[str] = []

    def __call__(self, *args: str) -> str:
        if args[:2] == ("service", "ls"):
            return "".join(f"{n}\n" for n in self.services.values() if n not in self.removed)
        if args[:2] == ("service", "ps"):
            names = [a for a in args[2:] if not a.startswith("-") and "=" not in a]
            ids = {sid for sid, name in self.services.items() if name in names}
            return "".join(t["ID"] + "\n" for t in self.tasks if t["ServiceID"] in ids)
        if args[:3] == ("inspect", "--type", "task"):
            return json.dumps([t for t in self.tasks if t["ID"] in args[3:]])
        if args[:2] == ("service", "inspect"):
            return json.dumps(
                [{"ID": s, "Spec": {"Name": n}} for s, n in self.services.items() if s in args]
            )
        if args[:2] == ("node", "inspect"):
            return json.dumps([n for n in self.nodes if n["ID"] in args[2:]])
        if args[:2] == ("service", "rm"):
            self.removed += args[2:]
            self.tasks = [t for t in self.tasks if self.services[t["ServiceID"]] not in args[2:]]
            return ""
        raise AssertionError(args)


def _adapter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, manager: _Manager) -> SwarmDocker:
    monkeypatch.setattr(ComposeDocker, "check", lambda self: None)
    adapter = SwarmDocker(folder=tmp_path, project="p", compose_file="docker-compose.yml")
    monkeypatch.setattr(adapter, "_docker", manager)
    return adapter


_NODES = [_node("n1", "198.18.7.10"), _node("n2", "198.18.7.11"), _node("n3", "198.18.7.12")]


@pytest.mark.parametrize(
    ("state", "availability"), [("down", "active"), ("disconnected", "active"), ("ready", "drain")]
)
def test_a_task_on_a_node_that_is_down_or_drained_is_not_routed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state: str, availability: str
) -> None:
    """A partitioned node's tasks still read `running` on the manager (it cannot hear their
    end): they are no instances, and they read as ended (nothing waits for them to stop)."""
    nodes = [_NODES[0], _node("n2", "198.18.7.11", state, availability)]
    manager = _Manager([_task("t1", "n1"), _task("t2", "n2")], nodes)
    adapter = _adapter(monkeypatch, tmp_path, manager)
    assert [(c.id, c.url) for c in adapter.observe()] == [("t1", "http://198.18.7.10:30001")]
    assert {c.id: c.state for c in adapter.inspect(["t1", "t2"])} == {"t1": "running", "t2": "dead"}


@pytest.mark.parametrize("state", ["ready", "unknown"])
def test_a_task_on_a_ready_node_or_one_a_new_leader_does_not_know_yet_is_routed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state: str
) -> None:
    """A manager just elected leader says "unknown" of every node until it reconnects: their
    tasks keep running and stay routed."""
    nodes = [_NODES[0], _node("n2", "198.18.7.11", state)]
    manager = _Manager([_task("t1", "n1"), _task("t2", "n2")], nodes)
    assert [c.id for c in _adapter(monkeypatch, tmp_path, manager).observe()] == ["t1", "t2"]


def test_a_port_the_manager_forgot_after_an_election_is_the_one_seen_before(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After a leader election the manager's copy of a running task has no published ports
    (seen on the 3-manager swarm: the pool emptied, 503s): the same container still
    publishes the port it was seen with, remembered in .lbrec/ by any earlier lbrec run.
    A new container of that task (another id) is not given the old port."""
    (tmp_path / ".lbrec").mkdir()
    manager = _Manager([_task("t1", "n1"), _task("t2", "n2")], list(_NODES))
    assert len(_adapter(monkeypatch, tmp_path, manager).observe()) == 2  # remembered
    for task in manager.tasks:
        task["Status"]["PortStatus"] = {}  # the election
    manager.tasks[1]["Status"]["ContainerStatus"]["ContainerID"] = "another"
    seen = _adapter(monkeypatch, tmp_path, manager).observe()  # another lbrec process
    assert [(c.id, c.url) for c in seen] == [("t1", "http://198.18.7.10:30001")]


def test_swarm_errors_name_the_node_by_address_and_the_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tasks = [
        _task("t1", "n2", state="rejected", err="No such image: acme/web:1"),
        _task("t2", "n3", state="rejected", err="No such image: acme/web:1"),
        _task("t3", "n1"),
    ]
    adapter = _adapter(monkeypatch, tmp_path, _Manager(tasks, list(_NODES)))
    assert adapter._task_errors("p_web-1") == [
        "vm 198.18.7.11: acme/web:1: No such image: acme/web:1",
        "vm 198.18.7.12: acme/web:1: No such image: acme/web:1",
    ]


def test_a_failed_refill_leaves_the_service_that_serves_and_a_lone_failure_goes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A current version refills a lost node's task; the new task fails: its service also
    runs a routed task, so it stays (Swarm retries). A service whose every live task is being
    discarded goes whole (its tasks would come back)."""
    tasks = [_task("t1", "n1"), _task("t2", "n2"), _task("t3", "n3", "s2")]
    manager = _Manager(tasks, list(_NODES))
    adapter = _adapter(monkeypatch, tmp_path, manager)
    adapter.discard(["t2"])
    assert manager.removed == []
    adapter.discard(["t3"])
    assert manager.removed == ["p_web-2"]


def test_a_running_task_whose_port_is_not_known_yet_is_not_an_instance_yet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Swarm's replacement for a lost node's task reads running before its node reports the
    port it published: an instance without an endpoint would be planned for a recreate."""
    fresh = _task("t2", "n2")
    fresh["Status"]["PortStatus"] = {}
    manager = _Manager([_task("t1", "n1"), fresh], list(_NODES))
    adapter = _adapter(monkeypatch, tmp_path, manager)
    assert [c.id for c in adapter.observe()] == ["t1"]
    assert {c.id: c.state for c in adapter.inspect(["t2"])} == {"t2": "created"}
