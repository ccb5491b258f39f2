"""EDGE. The only module that imports python_on_whales.

``WhalesDocker`` implements ``core.ports.DockerPort`` (what the rest of lbrec needs from
Docker) with python-on-whales (the docker CLI and Compose v2 plugin). Every third-party
exception is translated here into an lbrec error that keeps the command and the tail of
Docker's stderr.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException, NoSuchContainer
from python_on_whales.utils import run as run_docker

from ..core.errors import ApplyError, DockerUnavailable
from ..core.labels import BACKEND, PROJECT, ROLE
from ..core.ports import BuiltImage, DockerPort, Progress, Ready, collectable
from ..core.render import COMPOSE_FILE
from ..core.spec import DesiredState
from ..core.state import ObservedContainer
from .workspace import Workspace

__all__ = [
    "BuiltImage",
    "DockerEvents",
    "DockerPort",
    "WhalesDocker",
    "collectable",
    "stderr_tail",
    "whales_docker",
]


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


def parse_inspect(text: str) -> tuple[ObservedContainer, ...]:
    """PURE. lbrec's view of ``docker container inspect`` JSON (containers without the
    backend label are not lbrec's to manage and are left out)."""
    try:
        documents = json.loads(text or "[]")
    except json.JSONDecodeError as err:
        raise DockerUnavailable(f"docker inspect printed what is not JSON: {err}") from err
    observed = []
    for doc in documents:
        config = doc.get("Config") or {}
        state = doc.get("State") or {}
        labels = dict(config.get("Labels") or {})
        role = labels.get(ROLE, "backend")
        if role == "lb":
            labels.setdefault(BACKEND, "lb")
        if BACKEND not in labels:
            continue
        health = (state.get("Health") or {}).get("Status")
        started = state.get("StartedAt")
        if not started or started.startswith("0001-01-01"):
            started = None
        observed.append(
            ObservedContainer(
                endpoint=_endpoint(doc, labels.get(PORT_LABEL)),
                id=str(doc["Id"]),
                backend=labels[BACKEND],
                state=str(state.get("Status", "unknown")),
                health=str(health) if health else None,
                labels=labels,
                image=str(config.get("Image", "")),
                started_at=started,
                name=str(doc.get("Name", "")).lstrip("/"),
                role=role,
            )
        )
    observed.sort(key=lambda o: (o.backend, o.id))
    return tuple(observed)


PORT_LABEL = "lbrec.field.port"


def _endpoint(doc: dict[str, Any], port: str | None) -> str | None:
    """HOST:PORT the host reaches the container's ``port`` at, from NetworkSettings.Ports
    (an unspecified host address 0.0.0.0 or :: is reached on loopback)."""
    if not port:
        return None
    bindings = ((doc.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
    for binding in sorted(bindings, key=lambda b: ":" in str(b.get("HostIp", ""))):
        host = str(binding.get("HostIp") or "0.0.0.0")
        host_port = str(binding.get("HostPort") or "")
        if not host_port.isdigit():
            continue
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "127.0.0.1"  # a dual-stack bind: as backend_url reaches 0.0.0.0 and ::
        elif ":" in host:
            host = f"[{host}]"
        return f"{host}:{host_port}"
    return None


class WhalesDocker:
    """Docker through python-on-whales, scoped to one Compose project in one folder."""

    def __init__(self, *, folder: Path, project: str, compose_file: str) -> None:
        self.project = project
        self._client = DockerClient(
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
        if WhalesDocker._engine_ok:
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
        WhalesDocker._engine_ok = True

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
            WhalesDocker._engine_ok = False
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
                WhalesDocker._engine_ok = False
                raise DockerUnavailable(f"cannot inspect containers: {_one_line(err)}") from err
            text = err.stdout or "[]"  # the ones still there; the others were just removed
        return parse_inspect(text)

    def build(self, services: Sequence[str], *, progress: Progress | None = None) -> None:
        if not services:
            return
        try:
            if progress is None:
                self._client.compose.build(list(services), quiet=True)
                return
            stream = self._client.compose.build(list(services), stream_logs=True)
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
            raise ApplyError(
                f"starting {', '.join(services)} failed: {_one_line(err)}",
                backend=services[0],
                detail=stderr_tail(err),
            ) from err

    def pull(self, image: str) -> None:
        try:
            self._client.image.pull(image, quiet=True)
        except DockerException as err:
            raise ApplyError(
                f"pulling {image} failed: {_one_line(err)}; nothing of it was changed",
                detail=stderr_tail(err),
            ) from err

    def scale(self, counts: Mapping[str, int]) -> None:
        """``counts[name]`` containers of each service: new ones from the current compose
        file, beside the existing ones, which are left as they are (``--no-recreate``)."""
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
            raise ApplyError(
                f"starting new instances of {', '.join(services)} failed: {_one_line(err)}",
                backend=services[0],
                detail=stderr_tail(err),
            ) from err

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


def _tied_to_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it gets SIGTERM when lbrec dies, even by ``kill -9`` (Linux:
    util-linux ``setpriv --pdeathsig``; no ``preexec_fn``, which is unsafe with threads)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *cmd] if setpriv else cmd


class DockerEvents:
    """Follow ``docker events`` for one project's containers in a thread (drift, at once).

    Calls ``on_event("die backend1")`` when one of the project's containers stops, dies or is
    removed, so a watch loop repairs drift without waiting for its resync. The ``docker events``
    process is our own child: it is terminated by pid on :meth:`stop`, and restarted (after a
    pause) if it ends while we still want events, e.g. when the engine restarts.
    """

    _ACTIONS = ("die", "destroy", "stop", "kill", "oom")
    # While the engine is away, `docker events` is started again every RETRY s (it fails at
    # once); one that has stayed up ALIVE s means the engine is back. Small: containers that
    # stopped during the outage are routed again within about 2 s of its end.
    RETRY = 0.5
    ALIVE = 0.3

    def __init__(self, project: str, on_event: Callable[[str], None]) -> None:
        self.project = project
        self.on_event = on_event
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def _command(self) -> list[str]:
        cmd = ["docker", "events", "--filter", "type=container"]
        cmd += ["--filter", f"label={PROJECT}={self.project}"]
        for action in self._ACTIONS:
            cmd += ["--filter", f"event={action}"]
        return [*cmd, "--format", f'{{{{.Action}}}} {{{{index .Actor.Attributes "{BACKEND}"}}}}']

    def _run(self) -> None:
        lost = False  # a previous stream ended: events may have been missed meanwhile
        while not self._stop.is_set():
            try:
                self._proc = subprocess.Popen(
                    _tied_to_parent(self._command()),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
            except OSError:
                self._stop.wait(5.0)
                continue
            if lost:
                self._when_alive(self._proc)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                if line.strip():
                    self.on_event(line.strip())
            self._proc.wait()
            lost = True
            self._stop.wait(self.RETRY)  # the engine went away: try again shortly

    def _when_alive(self, proc: subprocess.Popen[str]) -> None:
        """Once a restarted stream has stayed up for ALIVE s, the engine is back: events
        during the outage are lost, so ask for a pass that re-observes everything at once."""

        def check() -> None:
            if proc.poll() is None and not self._stop.is_set():
                self.on_event("reconnected events-stream")

        timer = threading.Timer(self.ALIVE, check)
        timer.daemon = True
        timer.start()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lbrec-docker-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)


def whales_docker(workspace: Workspace, desired: DesiredState) -> DockerPort:
    """The one Docker factory: the real adapter for a folder and its project."""
    return WhalesDocker(folder=workspace.folder, project=desired.project, compose_file=COMPOSE_FILE)
