"""PURE. The ports: everything the engine needs from the outside, as Protocols and types.

The engine (``reconciler/engine/``) imports these and ``core`` only, never an adapter
(tests/test_architecture.py enforces it), so importing the executor loads no Docker library
and every edge can be stood in for in unit tests. The composition root
(``runtime/passes.py``) plugs the real adapters in:

* ``DockerPort``: the engine's containers (the Compose or the Swarm adapter, chosen by
  ``adapters/engines/auto.py``); in unit tests ``tests/reconciler/fakes.FakeDocker``,
  type-checked against it (mypy runs over tests/).
* ``WorkspacePort``: the deploy folder (``adapters.workspace.Workspace``): the desired state,
  what the images are built from, the files a pass writes (the deploy file, the pool, frozen
  once the engine went away), the sticky key, and ``RolloutDesk``: a canary's state and the
  `lbrec rollout` requests it picks up, the versions that were rolled back; and
  ``RepairRecords`` (defined beside the crash loop's rules, ``core/crash_loop.py``): what the
  loops remember of repairs.
* The proxy's admin API, the health probe and what should preempt a pass reach the engine as
  the callables of ``engine.hooks.Hooks``, typed here (``Confirm``, ``Drained``, ``Probe``,
  ``Preemption``, ``CountersOf``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from ...proxy.config import BackendsConfig
from .canary import Counters
from .crash_loop import RepairRecords
from .labels import BuildInfo
from .spec import BackendSpec, DesiredState
from .state import Observed, ObservedContainer

__all__ = [
    "BuiltImage",
    "Confirm",
    "CountersOf",
    "DockerPort",
    "Drained",
    "EngineRules",
    "Preemption",
    "Probe",
    "Progress",
    "Ready",
    "RepairRecords",
    "RolloutDesk",
    "RolloutRequest",
    "WorkspacePort",
    "collectable",
]

Progress = Callable[[str], None]


Ready = Callable[[str], bool]


class EngineRules(Protocol):
    """PURE. What an engine decides from a desired state (``core/engines/<name>.py``, chosen
    by ``core/engines/auto.py``); its edge is a ``DockerPort`` (``adapters/engines/``)."""

    @property
    def name(self) -> str: ...
    # A version comes and goes whole (Swarm: one service per version, which Swarm scales as
    # it likes), else new instances replace old ones in batches of max_parallel.
    @property
    def whole_versions(self) -> bool: ...
    # Settings that need new instances on this engine only, beside labels.TRACKED.
    def version_fields(self, desired: DesiredState, backend: BackendSpec) -> dict[str, str]: ...
    # Where the instances pull an image lbrec builds (tagged ``tag``) from.
    def image_reference(self, desired: DesiredState, tag: str) -> str: ...
    # What this engine cannot do with ``desired`` (the schema's error), or None.
    def refusal(self, desired: DesiredState) -> str | None: ...
    # The file the engine deploys from (docker-compose.yml: a Compose file, a stack file).
    def deploy_file(
        self,
        desired: DesiredState,
        build: BuildInfo,
        *,
        source: str = ...,
        revisions: Mapping[str, str] | None = None,
    ) -> str: ...


class DockerPort(Protocol):
    def check(self) -> None: ...
    def has_image(self, tag: str) -> bool: ...
    def observe(self) -> tuple[ObservedContainer, ...]: ...
    def build(self, services: Sequence[str], *, progress: Progress | None = None) -> None: ...
    def pull(self, image: str) -> None: ...
    def up(self, services: Sequence[str], *, force_recreate: bool) -> None: ...
    # Instances per backend, new ones beside the old; the new ones' ids when the adapter knows
    # them better than a before/after observation (Swarm: a task that already ended), else None.
    def scale(self, counts: Mapping[str, int]) -> Mapping[str, Sequence[str]] | None: ...
    def inspect(self, container_ids: Sequence[str]) -> tuple[ObservedContainer, ...]: ...
    def logs_tail(self, container_id: str) -> str: ...
    def start(self, container_ids: Sequence[str]) -> None: ...
    def remove(self, container_ids: Sequence[str]) -> None: ...
    def stop_remove(self, container_ids: Sequence[str]) -> None: ...
    # Instances this pass created and never routed (a failed or preempted batch) go again.
    def discard(self, container_ids: Sequence[str]) -> None: ...
    def built_images(self) -> tuple[BuiltImage, ...]: ...
    def remove_image(self, reference: str) -> None: ...
    def remove_network(self) -> None: ...
    def wait_healthy(
        self, services: Sequence[str], *, timeout: float, ready: Ready | None = None
    ) -> dict[str, str | None]: ...


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image Compose built for the project (it labels them com.docker.compose.project)."""

    reference: str  # repository:tag
    created: str  # sortable: "2026-12-03 16:58:29 +0000 UTC"


def collectable(
    images: Sequence[BuiltImage], in_use: Collection[str], *, keep_previous: int = 1
) -> list[str]:
    """PURE. Which built images may go: per repository, every one that no container uses,
    except the ``keep_previous`` newest of those (kept for a fast rollback)."""
    by_repo: dict[str, list[BuiltImage]] = {}
    for image in images:
        repo = image.reference.rsplit(":", 1)[0]
        by_repo.setdefault(repo, []).append(image)
    out: list[str] = []
    for repo in sorted(by_repo):
        unused = [i for i in by_repo[repo] if i.reference not in in_use]
        unused.sort(key=lambda i: i.created, reverse=True)
        out.extend(i.reference for i in unused[keep_previous:])
    return out


class Probe(Protocol):
    """GET ``url``: None when it answers 200 within ``timeout`` s, else why not."""

    def __call__(self, url: str, timeout: float, /) -> str | None: ...


# The proxy, as the engine sees it (each None when no proxy answers):
# ``confirm(generation)``: the running proxy serves that pool generation (False: it answers but
# does not confirm); ``drained(urls, timeout)``: what is still in flight to ``urls`` once the
# wait ends; ``counters(urls)``: its cumulative counters summed over those instances.
Confirm = Callable[[str], bool | None]
Drained = Callable[[Collection[str], float], int | None]
CountersOf = Callable[[Collection[str]], Counters | None]
# Why this pass should yield now (an edit waits for the lock, the file changed), or None.
Preemption = Callable[[], str | None]

RolloutRequest = Literal["promote", "promote-full", "abort"]


class RolloutDesk(Protocol):
    """How other commands reach a canary in progress, and what loops remember of rollbacks
    (``adapters.rollout_control.RolloutFiles``)."""

    def write_state(self, backend: str, entry: dict[str, Any] | None) -> None: ...
    def take_request(self, backend: str) -> RolloutRequest | None: ...
    def rolled_back(self) -> dict[str, dict[str, Any]]: ...
    def remember_rollback(self, backend: str, config_hash: str, reason: str) -> None: ...
    def forget_rollback(self, backend: str) -> None: ...


class WorkspacePort(Protocol):
    """The deploy folder, as the engine uses it (``adapters.workspace.Workspace``)."""

    @property
    def spec_file(self) -> Path: ...
    @property
    def rollouts(self) -> RolloutDesk: ...
    def load(self) -> DesiredState: ...
    def build_info(self, desired: DesiredState, *, stage: bool = ...) -> BuildInfo: ...
    def observe(self, containers: tuple[ObservedContainer, ...]) -> Observed: ...
    # The engine's epoch (adapters/engine_epoch.py): one more each time the engine went away.
    def epoch(self) -> int: ...
    def sticky_secret(self) -> bytes: ...
    # Each write is atomic and returns the path written, or None when the file was unchanged.
    def write_deploy_file(self, text: str) -> str | None: ...
    # The pool, frozen when the engine went away since ``epoch`` (its ports are stale): the
    # pool as written (its generation is the one to confirm) and the path, or None.
    def write_pool(
        self, config: BackendsConfig, *, epoch: int | None
    ) -> tuple[BackendsConfig, str | None]: ...
