"""Images first: pull or build what new instances need; collect what no one needs."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.errors import ApplyError
from ..core.labels import BuildInfo
from ..core.plan import Action, StepKind
from ..core.ports import DockerPort, Progress, collectable
from ..core.render import backend_image
from ..core.spec import DesiredState


def ensure_images(
    desired: DesiredState,
    actions: Sequence[Action],
    *,
    docker: DockerPort,
    build: BuildInfo,
    say: Progress,
    progress: Progress | None,
) -> dict[str, ApplyError]:
    """Pull or build every image a new instance needs, before anything changes. Returns the
    backends whose image failed (their rollout is skipped: nothing of them changes)."""
    failed: dict[str, ApplyError] = {}
    done: dict[str, ApplyError | None] = {}
    for action in actions:
        spec = desired.backend(action.backend)
        if spec is None or not any(s.kind is StepKind.CREATE for s in action.steps):
            continue
        image = backend_image(desired, spec, build)
        if image not in done:
            done[image] = None
            try:
                if docker.has_image(image):
                    pass
                elif spec.image is not None:
                    say(f"pulling {image} ({spec.name})")
                    docker.pull(image)
                else:
                    say(f"building {image} ({spec.name})")
                    docker.build([spec.name], progress=progress)
            except ApplyError as err:
                done[image] = err
        problem = done[image]
        if problem is not None:
            failed[action.backend] = problem
    return failed


def collect_images(docker: DockerPort, say: Progress) -> None:
    in_use = {c.image for c in docker.observe()}
    for reference in collectable(docker.built_images(), in_use):
        try:
            docker.remove_image(reference)
            say(f"removed old image {reference}")
        except ApplyError as err:  # e.g. used by a container of someone else: leave it
            say(f"kept image {reference}: {err.message}")
