"""EDGE. engine: compose: the DockerPort over one Docker engine and its Compose project.

``ComposeDocker`` implements ``core.ports.DockerPort`` (what the rest of lbrec needs from
Docker) with python-on-whales (the docker CLI and Compose v2 plugin); the engine adapters
(this folder) are the only importers of it. Every third-party exception is translated here
into an lbrec error that keeps the command and the tail of Docker's stderr. The file it
deploys from is rendered by core/engines/compose.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException, NoSuchContainer
from python_on_whales.utils import run as run_docker

from ...core.errors import ApplyError, DockerUnavailable
from ...core.labels import PROJECT
from ...core.ports import BuiltImage, DockerPort, Progress, Ready, collectable
from ...core.state import ObservedContainer

__all__ = [
    "BuiltImage",
    "ComposeDocker",
    "DockerPort",
    "collectable",
    "stderr_tail",
]
from ..docker_events import tied_to_parent
from ..docker_inspect import parse_inspect

_PULL_FAILURES = (
    "pull access denied",
    "no such host",
    "failed to resolve",
    "not found: manifest",
    "dial tcp",
    "failed to do request",
    "repository does not exist",
)


def stderr_tail(err: DockerException, lines: int = 6) -> str:
    text = (err.stderr or err.stdout or "").strip()
    tail = [line for line in text.splitlines() if line.strip() and "level=warning" not in line][
        -lines:
    ]
    return "\n".join(tail) or f"exit code {err.return_code}"


def _one_line(err: DockerException) -> str:
    tail = stderr_tail(err, lines=3).splitlines()
    return tail[-1] if tail else f"exit code {err.return_code}"


def _compose_failed(err: DockerException, what: str, services: Sequence[str]) -> ApplyError:
    """``starting web1, web2 failed: <Docker's line>``, naming the first backend."""
    return ApplyError(
        f"{what} {', '.join(services)} failed: {_one_line(err)}",
        backend=services[0],
        detail=stderr_tail(err),
    )


class ComposeDocker:
    """Docker through python-on-whales, scoped to one Compose project in one folder."""

    def __init__(self, *, folder: Path, project: str, compose_file: str) -> None:
        self.project = project
        self._client = DockerClient(
            compose_files=[folder / compose_file],
            compose_project_name=project,
            compose_project_directory=folder,
        )
        # Builds run long: tied to this process, so that a `kill -9` of lbrec never leaves a
        # `docker compose build` running beside the next lbrec building the same tag.
        self._builder = DockerClient(
            client_call=tied_to_parent(["docker"]),
            compose_files=[folder / compose_file],
            compose_project_name=project,
            compose_project_directory=folder,
        )

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except DockerException as err:
            raise ApplyError(f"{what} failed: {_one_line(err)}", detail=stderr_tail(err)) from err

    _engine_ok = False  # per process: checked once, again after a failure

    def check(self) -> None:
        if ComposeDocker._engine_ok:
            return
        try:
            self._client.version()
        except DockerException as err:
            raise DockerUnavailable(
                f"cannot reach the Docker engine: {_one_line(err)}",
                hint="start it (on Debian as root: scripts/docker-dev.sh), or set DOCKER_HOST",
            ) from err
        except FileNotFoundError as err:
            raise DockerUnavailable(
                "the docker CLI is not installed",
                hint="run scripts/docker-dev.sh (Debian, root) or install Docker",
            ) from err
        try:
            self._client.compose.version()
        except DockerException as err:
            raise DockerUnavailable(
                "Docker Compose v2 is missing (`docker compose version` failed)",
                hint="run scripts/docker-dev.sh, or install the docker-compose-plugin",
            ) from err
        ComposeDocker._engine_ok = True

    def has_image(self, tag: str) -> bool:
        try:
            return bool(self._client.image.exists(tag))
        except DockerException:
            return False

    def observe(self) -> tuple[ObservedContainer, ...]:
        """One snapshot: one ``docker ps`` and one ``docker inspect`` over all ids, parsed
        here. No lazy python-on-whales objects (each property read would re-run ``docker
        inspect``, and a container removed in between raised NoSuchContainer mid-loop); a
        container that vanishes between the two calls is simply not observed."""
        docker = [str(part) for part in self._client.client_config.docker_cmd]
        listing = [*docker, "container", "ls", "-aq", "--no-trunc"]
        listing += ["--filter", f"label={PROJECT}={self.project}"]
        try:
            ids = str(run_docker(listing)).split()
        except DockerException as err:
            ComposeDocker._engine_ok = False
            raise DockerUnavailable(f"cannot list containers: {_one_line(err)}") from err
        return self._inspect(ids, strict=True)

    def _inspect(self, ids: Sequence[str], *, strict: bool) -> tuple[ObservedContainer, ...]:
        """One ``docker container inspect`` over ``ids``; a container that vanished meanwhile
        is not observed. ``strict``: any other failure is the engine's (DockerUnavailable);
        else what was printed is kept (a rollout's health wait looks again shortly)."""
        if not ids:
            return ()
        docker = [str(part) for part in self._client.client_config.docker_cmd]
        try:
            text = str(run_docker([*docker, "container", "inspect", *ids]))
        except DockerException as err:
            if strict and "no such" not in (err.stderr or "").lower():
                ComposeDocker._engine_ok = False
                raise DockerUnavailable(f"cannot inspect containers: {_one_line(err)}") from err
            text = err.stdout or "[]"  # the ones still there; the others were just removed
        return parse_inspect(text)

    def build(self, services: Sequence[str], *, progress: Progress | None = None) -> None:
        if not services:
            return
        try:
            if progress is None:
                self._builder.compose.build(list(services), quiet=True)
                return
            stream = self._builder.compose.build(list(services), stream_logs=True)
            for _source, chunk in stream or ():
                line = chunk.decode(errors="replace").rstrip()
                if line:
                    progress(line)
        except DockerException as err:
            detail = stderr_tail(err, lines=12)
            if any(word in detail for word in _PULL_FAILURES):
                detail += (
                    "\nhint: the base image could not be pulled; without internet, set "
                    "LBREC_BASE_IMAGE (or base_image:) to a local image, e.g. the "
                    "lbrec-base:bookworm that scripts/docker-dev.sh builds"
                )
            raise ApplyError(
                f"building the image of {', '.join(services)} failed: {_one_line(err)}",
                backend=services[0],
                detail=detail,
            ) from err

    def up(self, services: Sequence[str], *, force_recreate: bool) -> None:
        if not services:
            return
        try:
            self._client.compose.up(
                list(services),
                detach=True,
                no_build=True,
                dependencies=False,
                force_recreate=force_recreate,
                quiet=True,
                pull="never",
            )
        except DockerException as err:
            raise _compose_failed(err, "starting", services) from err

    def pull(self, image: str) -> None:
        try:
            self._client.image.pull(image, quiet=True)
        except DockerException as err:
            raise ApplyError(
                f"pulling {image} failed: {_one_line(err)}; nothing of it was changed",
                detail=stderr_tail(err),
            ) from err

    def scale(self, counts: Mapping[str, int]) -> Mapping[str, Sequence[str]] | None:
        """``counts[name]`` containers of each service: new ones from the current compose
        file, beside the existing ones, which are left as they are (``--no-recreate``).
        None: the caller finds the new ones by observing (Compose does not say)."""
        services = sorted(counts)
        try:
            self._client.compose.up(
                services,
                detach=True,
                no_build=True,
                dependencies=False,
                recreate=False,
                scales=dict(counts),
                quiet=True,
                pull="never",
            )
        except DockerException as err:
            raise _compose_failed(err, "starting new instances of", services) from err
        return None

    def inspect(self, container_ids: Sequence[str]) -> tuple[ObservedContainer, ...]:
        return self._inspect(container_ids, strict=False)

    def stop_remove(self, container_ids: Sequence[str]) -> None:
        """Stop with each container's stop signal and grace period, then remove."""
        if not container_ids:
            return
        try:
            self._client.container.stop(list(container_ids))
        except NoSuchContainer:
            pass
        except DockerException as err:
            if "no such container" not in (err.stderr or "").lower():
                raise ApplyError(
                    f"stopping {', '.join(i[:12] for i in container_ids)} failed: {_one_line(err)}",
                    detail=stderr_tail(err),
                ) from err
        self.remove(container_ids)

    def discard(self, container_ids: Sequence[str]) -> None:
        """A batch this pass created and never routed: it never served a request, so there
        is nothing to let finish: killed and removed at once (``rm -f``), never after its
        stop grace period (a preempted pass would otherwise hold an emergency edit for it)."""
        self.remove(container_ids)

    def built_images(self) -> tuple[BuiltImage, ...]:
        docker = [str(part) for part in self._client.client_config.docker_cmd]
        listing = [*docker, "image", "ls", "--format", "{{json .}}"]
        listing += ["--filter", f"label=com.docker.compose.project={self.project}"]
        try:
            text = str(run_docker(listing))
        except DockerException:
            return ()
        images = []
        for line in text.splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            repo, tag = doc.get("Repository", ""), doc.get("Tag", "")
            if not repo.startswith(f"{self.project}-") or tag in ("", "<none>"):
                continue  # only the tags lbrec gives what Compose builds for it
            images.append(BuiltImage(f"{repo}:{tag}", str(doc.get("CreatedAt", ""))))
        return tuple(images)

    def remove_image(self, reference: str) -> None:
        """Untag (and delete when nothing else holds it); never forced."""
        with self._translate(f"removing image {reference}"):
            self._client.image.remove(reference, force=False, prune=True)

    def start(self, container_ids: Sequence[str]) -> None:
        if container_ids:
            with self._translate("docker start"):
                self._client.container.start(list(container_ids))

    def remove(self, container_ids: Sequence[str]) -> None:
        for cid in container_ids:
            try:
                self._client.container.remove(cid, force=True)
            except NoSuchContainer:
                continue  # already gone: that is what we wanted
            except DockerException as err:
                raise ApplyError(
                    f"removing container {cid[:12]} failed: {_one_line(err)}",
                    detail=stderr_tail(err),
                ) from err

    def remove_network(self) -> None:
        """The project's default network, which Compose created with the first container."""
        name = f"{self.project}_default"
        try:
            if self._client.network.exists(name):
                self._client.network.remove(name)
        except DockerException as err:
            raise ApplyError(f"removing network {name} failed: {_one_line(err)}") from err

    def wait_healthy(
        self, services: Sequence[str], *, timeout: float, ready: Ready | None = None
    ) -> dict[str, str | None]:
        """Poll until each backend's container is healthy; map backend -> None or the problem.

        Docker runs a container's first healthcheck one interval after it starts; ``ready``
        (a probe of the published health endpoint from the host) lets a running container
        count as healthy as soon as it answers, without waiting for that first interval.
        """
        pending = set(services)
        problems: dict[str, str | None] = {}
        deadline = time.monotonic() + timeout
        while pending:
            by_backend = {c.backend: c for c in self.observe() if c.backend in pending}
            for name in sorted(pending):
                c = by_backend.get(name)
                if c is None:
                    problems[name] = "container not found after start"
                elif c.state in ("exited", "dead"):
                    problems[name] = f"container {c.state}: {self.logs_tail(c.id)}"
                elif c.state == "running" and (
                    c.health in ("healthy", None)
                    or (c.health == "starting" and ready is not None and ready(name))
                ):
                    problems[name] = None
                else:
                    continue
                pending.discard(name)
            if not pending:
                break
            if time.monotonic() >= deadline:
                for name in pending:
                    problems[name] = f"not healthy after {timeout:g}s"
                break
            time.sleep(0.1)
        return problems

    def logs_tail(self, container_id: str) -> str:
        try:
            text = str(self._client.container.logs(container_id, tail=3))
        except DockerException:
            return "(no logs)"
        return " | ".join(line for line in text.splitlines() if line.strip()) or "(no output)"
