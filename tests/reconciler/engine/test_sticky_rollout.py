"""A sticky canary's rollout writes its own key into backends.json (issue 20 finding 13): one
key on every instance and every step, from the host's secret; the next rollout gets another."""

from __future__ import annotations

import json
from pathlib import Path

from lbrec.reconciler.adapters.sticky_secret import STICKY_SECRET_FILE
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.render import POOL_FILE
from lbrec.reconciler.engine.converge import converge

from ..fakes import FakeDocker, make_folder

CANARY = (
    "rollout: {strategy: canary, steps: [5, 25, 100], interval: 10s, min_healthy_time: 0,"
    " healthy_deadline: 1s, drain_timeout: 1s, sticky: 'cookie:lb-canary'}\n"
)
WEB = "backends:\n  - {name: web, port: 8000, weight: 3, replicas: 2, env: {V: '%s'}}\n"


def _rollout(folder: Path, workspace: Workspace, docker: FakeDocker, version: str) -> set[str]:
    """Roll out ``version``; the sticky keys of the split pools the proxy was asked to serve."""
    (folder / "desired-state.yaml").write_text(CANARY + WEB % version)
    docker.desired = workspace.load()
    hooks = docker.hooks()
    confirm = hooks.confirm
    assert confirm is not None
    keys: set[str] = set()

    def record(generation: str) -> bool | None:
        for entry in json.loads((folder / POOL_FILE).read_text())["backends"]:
            if "percent" in entry:
                assert entry.get("sticky") == "cookie:lb-canary"
                keys.add(entry["sticky_key"])
        return confirm(generation)

    hooks.confirm = record
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert not report.failed
    return keys


def test_each_sticky_rollout_writes_its_own_key(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "desired-state.yaml").write_text(CANARY + WEB % "1")
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    converge(workspace, docker, check=False, hooks=docker.hooks())
    assert not (folder / STICKY_SECRET_FILE).exists()  # no canary yet, no secret made
    (first,) = _rollout(folder, workspace, docker, "2")  # one key over 5 % and 25 %
    assert len(first) == 64
    assert (folder / STICKY_SECRET_FILE).stat().st_mode & 0o077 == 0
    (second,) = _rollout(folder, workspace, docker, "3")
    assert second != first
    pool = json.loads((folder / POOL_FILE).read_text())["backends"]
    assert all("sticky_key" not in entry for entry in pool)  # promoted: no split, no key
