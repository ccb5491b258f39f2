"""Identity, not just liveness (issue 25): after an engine restart the instances come back on
other host ports, and the ports they had may belong to another project's containers.

The pool names each instance's container; the moment the engine goes away the pool is frozen
(the proxy routes none of it) and a pass that observed the engine before that writes only
frozen pools; an entry is routed again by a pass that re-read its container's port. A held
(rolled-back) backend's old version keeps serving wherever it listens now.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lbrec.proxy.config import load_config
from lbrec.reconciler.adapters import engine_epoch
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.render import POOL_FILE
from lbrec.reconciler.core.spec import DesiredState, parse_spec
from lbrec.reconciler.engine.converge import converge
from lbrec.reconciler.engine.hooks import Hooks
from lbrec.reconciler.engine.run import Run

from ..fakes import FAST, TWO, FakeDocker, make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def _setup(folder: Path, text: str) -> tuple[Workspace, DesiredState]:
    (folder / "desired-state.yaml").write_text(FAST + text)
    workspace = Workspace.at(folder / "desired-state.yaml")
    return workspace, parse_spec(FAST + text)


def _pool(folder: Path) -> list[dict[str, object]]:
    backends: list[dict[str, object]] = json.loads((folder / POOL_FILE).read_text())["backends"]
    return backends


def _restart_engine(docker: FakeDocker, shift: int = 100) -> dict[str, str]:
    """Every container comes back on another host port; returns id -> its new URL."""
    moved = {}
    for cid, c in list(docker.containers.items()):
        assert c.endpoint is not None
        host, port = c.endpoint.rsplit(":", 1)
        endpoint = f"{host}:{int(port) + shift}"
        docker.containers[cid] = dataclasses.replace(c, endpoint=endpoint, health="healthy")
        moved[cid] = f"http://{endpoint}"
    return moved


def _roll_back_b(folder: Path, workspace: Workspace, docker: FakeDocker) -> None:
    """b's new version is rolled back and held: its old instance keeps serving."""
    docker.unhealthy = {"b"}
    (folder / "desired-state.yaml").write_text(
        FAST + TWO.replace("weight: 2}", "weight: 2, env: {V: broken}}")
    )
    docker.desired = workspace.load()
    first = converge(workspace, docker, check=False, hooks=docker.hooks(), hold_rolled_back=True)
    assert first.failed[0].rolled_back


@pytest.mark.parametrize("ids_in_pool", [True, False], ids=["pool-with-ids", "pool-without-ids"])
def test_a_held_backend_is_routed_again_where_its_instances_listen_now(
    folder: Path, ids_in_pool: bool
) -> None:
    """Point 2: a canary rolled back and held, the engine restarted (new ports), `lbrec up`
    started: the old version keeps serving, at its new ports (the pool was [] before)."""
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    assert not converge(workspace, docker, check=False, hooks=docker.hooks()).failed
    _roll_back_b(folder, workspace, docker)
    (old_b,) = docker.of("b")
    if not ids_in_pool:  # a pool written before the entries named their containers
        data = json.loads((folder / POOL_FILE).read_text())
        for entry in data["backends"]:
            entry.pop("container", None)
        (folder / POOL_FILE).write_text(json.dumps(data))
    docker.unhealthy = set()
    moved = _restart_engine(docker)
    report = converge(workspace, docker, check=False, hooks=docker.hooks(), hold_rolled_back=True)
    assert not report.failed
    assert [o.action.backend for o in report.deferred] == ["b"]  # still held, not rolled out
    routed = {(e["name"], e["url"]) for e in _pool(folder)}
    assert ("b", moved[old_b.id]) in routed, routed
    (a,) = docker.of("a")
    assert routed == {("a", moved[a.id]), ("b", moved[old_b.id])}
    assert all(e.get("container") and not e.get("frozen") for e in _pool(folder))


def test_the_pool_is_frozen_when_the_engine_goes_away_until_a_pass_rereads_the_ports(
    folder: Path,
) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    assert not converge(workspace, docker, check=False, hooks=docker.hooks()).failed
    assert {e["container"] for e in _pool(folder)} == set(docker.containers)

    assert engine_epoch.freeze_pool(folder, folder / POOL_FILE, "the engine went away") == 2
    config = load_config(folder / POOL_FILE)
    assert config.routable == ()  # the proxy routes none of them
    assert all(e.frozen and "re-reads" in e.frozen for e in config.backends)

    moved = _restart_engine(docker)
    report = converge(workspace, docker, check=False, hooks=docker.hooks())
    assert not report.failed
    assert {(e["container"], e["url"]) for e in _pool(folder)} == set(moved.items())
    assert not any(e.get("frozen") for e in _pool(folder))


def test_a_pass_that_observed_before_the_engine_went_away_writes_only_frozen_pools(
    folder: Path,
) -> None:
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    assert not converge(workspace, docker, check=False, hooks=docker.hooks()).failed
    stale = Run(
        desired, workspace, docker, Hooks(), say=lambda _m: None, epoch=engine_epoch.current(folder)
    )
    stale.know(docker.containers.values())
    for name in ("a", "b"):
        stale.adopt(name, docker.of(name))
    engine_epoch.freeze_pool(folder, folder / POOL_FILE, "the engine went away")
    stale.write_pool()
    config = load_config(folder / POOL_FILE)
    assert len(config.backends) == 2 and config.routable == ()


def test_one_url_is_one_container_in_a_pass_that_planned_with_old_ports(folder: Path) -> None:
    """The engine handed an old instance's port to a new one while a pass ran: routing the new
    one drops the stale entry (was: ValidationError duplicate backend 'a' at ...:32768)."""
    workspace, desired = _setup(folder, TWO)
    docker = FakeDocker(workspace, desired)
    assert not converge(workspace, docker, check=False, hooks=docker.hooks()).failed
    (old,) = docker.of("a")
    run = Run(desired, workspace, docker, Hooks(), say=lambda _m: None)
    run.adopt("a", [old])
    new = dataclasses.replace(old, id="a-99", name="p-a-99")  # same URL, another container
    run.know([new])
    run.route("a", [new.id])
    assert [(e["container"], e["url"]) for e in _pool(folder)] == [("a-99", old.url)]
