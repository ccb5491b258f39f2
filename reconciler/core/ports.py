"""PURE. The ports: what the engine needs from the outside, as Protocols and plain types.

``DockerPort`` is implemented by ``adapters.docker.WhalesDocker`` and, in unit tests, by
``tests/reconciler/fakes.FakeDocker`` (type-checked against it: mypy runs over tests/). The
engine imports these, never an adapter, so importing the executor loads no Docker library.
The proxy's admin API and the health probe reach the engine as the callables of
``engine.hooks.Hooks``, typed here (``Probe``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .state import ObservedContainer

__all__ = ["BuiltImage", "DockerPort", "Probe", "Progress", "Ready", "collectable"]

Progress = Callable[[str], None]


Ready = Callable[[str], bool]


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
