"""A fake Docker port for unit tests of apply/converge and the CLI (no engine needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ApplyError
from reconciler.labels import backend_labels
from reconciler.spec import DesiredState
from reconciler.state import ObservedContainer
from reconciler.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TWO = "backends:\n  - {name: a, port: 9101, weight: 1}\n  - {name: b, port: 9102, weight: 2}\n"


@dataclass
class FakeDocker:
    """Records every call with the pool routed at that moment; containers live in a dict."""

    workspace: Workspace
    desired: DesiredState
    fail_build: bool = False
    unhealthy: set[str] = field(default_factory=set)
    containers: dict[str, ObservedContainer] = field(default_factory=dict)
    calls: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    counter: int = 0

    def _routed(self) -> tuple[str, ...]:
        path = self.workspace.pool_file
        if not path.exists():
            return ()
        return tuple(b["name"] for b in json.loads(path.read_text())["backends"])

    def _record(self, what: str, names: Sequence[str]) -> None:
        self.calls.append((what, tuple(names), self._routed()))

    def check(self) -> None:
        pass

    def has_image(self, tag: str) -> bool:
        return tag in self.images

    def observe(self) -> tuple[ObservedContainer, ...]:
        return tuple(self.containers.values())

    def build(self, services: Sequence[str], *, progress: object = None) -> None:
        self._record("build", services)
        if self.fail_build:
            raise ApplyError("building failed: no such image", detail="tail of docker's error")

    def up(self, services: Sequence[str], *, force_recreate: bool) -> None:
        self._record("up", services)
        build = self.workspace.build_info(self.desired)
        for name in services:
            spec = self.desired.backend(name)
            assert spec is not None
            self.counter += 1
            self.containers[name] = ObservedContainer(
                id=f"{name}-{self.counter}",
                backend=name,
                state="running",
                health="healthy",
                labels=backend_labels(spec, self.desired, build),
            )

    def start(self, container_ids: Sequence[str]) -> None:
        self._record("start", container_ids)
        for name, c in list(self.containers.items()):
            if c.id in container_ids:
                self.containers[name] = ObservedContainer(
                    id=c.id, backend=name, state="running", health="healthy", labels=c.labels
                )

    def remove(self, container_ids: Sequence[str]) -> None:
        self._record("remove", container_ids)
        for name, c in list(self.containers.items()):
            if c.id in container_ids:
                del self.containers[name]

    def remove_network(self) -> None:
        self._record("remove_network", ())

    def wait_healthy(
        self, services: Sequence[str], *, timeout: float, ready: object = None
    ) -> dict[str, str | None]:
        self._record("wait", services)
        return {n: ("not healthy after 1s" if n in self.unhealthy else None) for n in services}


def make_folder(tmp_path: Path) -> Path:
    """A deploy folder with the build context lbrec needs."""
    for name in ("Dockerfile.backend",):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend/app.py").write_bytes((REPO / "backend/app.py").read_bytes())
    return tmp_path
