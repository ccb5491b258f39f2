"""EDGE. engine: swarm: the DockerPort over a Docker Swarm (docs/swarm.md).

The engine's plan and rollout steps are the same as on Compose; what differs is how an
instance is made and unmade. Here an instance is a Swarm *task*, and a backend version is a
*service* (core/engines/swarm.py):

* ``observe``: the tasks of the project's services, from the manager's API alone
  (swarm_tasks.py): each task Swarm wants running whose container started, on whatever node,
  reached at ``<node address>:<port it published there in host mode>``; a task that ended is
  history (Swarm keeps it), not an instance. An instance's id is its task's id.
* ``scale``: deploys the stack file (without ``--prune``: the old version keeps serving) and
  waits until the new tasks have containers (their images pulled by their nodes); a task Swarm
  cannot start (no such image, no resources) is reported with Swarm's own error, naming the
  node and the image.
* ``stop_remove``: a version leaves whole (lbrec drained its tasks first): ``docker service
  rm``, then waits until its containers are gone. Removing only some of a service's tasks is
  a scale down where Swarm picks the tasks (only drift repair does that).
* ``build``: Compose builds the image and pushes it to ``registry:``; Swarm nodes pull it.

Tested on a single-node swarm and on swarms of 3 engines of the test's own
(tests/integration/test_swarm_nodes.py, docs/swarm.md).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run as run_docker

from ...core.defaults import STACK_FILE
from ...core.errors import ApplyError, DockerUnavailable
from ...core.labels import BACKEND, CONFIG_HASH, FIELD_PREFIX, PROJECT, SWARM_SERVICE, SWARM_TASK
from ...core.ports import Progress
from ...core.render import dump_yaml
from ...core.state import ObservedContainer
from ..files import atomic_write
from .compose import ComposeDocker, _one_line, stderr_tail
from .swarm_tasks import node_addresses, parse_tasks

__all__ = ["SwarmDocker"]

# How long a deployed service may take to have containers for its tasks (pulls included).
TASKS_DEADLINE = 120.0


class SwarmDocker(ComposeDocker):
    """ComposeDocker's observation, inspection, logs and images; Swarm for the rest."""

    def __init__(
        self,
        *,
        folder: Path,
        project: str,
        compose_file: str,
        tasks_deadline: float = TASKS_DEADLINE,
    ) -> None:
        super().__init__(folder=folder, project=project, compose_file=compose_file)
        self.folder = folder
        self.compose_file = compose_file
        self.tasks_deadline = tasks_deadline
        # The service of each task container scale() made: Swarm deletes the containers of a
        # crash-looping task soon, and discard() must still find the service to remove.
        self._born: dict[str, str] = {}

    def _docker(self, *args: str) -> str:
        docker = [str(part) for part in self._client.client_config.docker_cmd]
        return str(run_docker([*docker, *args]))

    def check(self) -> None:
        super().check()
        try:
            state = self._docker(
                "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"
            ).split()
        except DockerException as err:
            raise DockerUnavailable(f"cannot ask the engine about Swarm: {_one_line(err)}") from err
        if state[:1] != ["active"]:
            raise DockerUnavailable(
                "engine: swarm, but this Docker engine is not in a swarm "
                f"(its state: {' '.join(state[:1]) or 'unknown'})",
                hint="`docker swarm init` (or join one), or set engine: compose",
            )
        if state[1:2] != ["true"]:
            raise DockerUnavailable(
                "engine: swarm, but this node is not a manager: lbrec deploys stacks",
                hint="run lbrec on a manager node",
            )

    # -- what runs -----------------------------------------------------------------------
    def observe(self) -> tuple[ObservedContainer, ...]:
        """The project's instances: tasks Swarm wants running whose container started (a task
        marked for shutdown leaves the pool at once, before its container stops), each on its
        node's address."""
        return tuple(
            _drift(c)
            for c in self._tasks(wanted_only=True)
            if c.state not in ("created", "exited", "dead", "removing")
        )

    def _tasks(
        self, *, wanted_only: bool = False, services: Sequence[str] | None = None
    ) -> tuple[ObservedContainer, ...]:
        """Every task of the project's services (or of ``services``), history included unless
        ``wanted_only``, that has or had a container."""
        names = sorted(self._service_names() if services is None else services)
        if not names:
            return ()
        ask = ["service", "ps", "-q", "--no-trunc"]
        if wanted_only:
            ask += ["--filter", "desired-state=running"]
        ids: set[str] = set()
        try:
            ids = set(self._docker(*ask, *names).split())
        except DockerException:  # one of them went meanwhile: ask each
            for name in names:
                with contextlib.suppress(DockerException):
                    ids |= set(self._docker(*ask, name).split())
        return self._inspect_tasks(sorted(ids))

    def _inspect_tasks(self, ids: Sequence[str]) -> tuple[ObservedContainer, ...]:
        docs = self._inspect_json("task", ids)
        docs = [
            d
            for d in docs
            if ((d.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
            or (d.get("Status") or {}).get("State") in ("starting", "running")
        ]
        services = {str(d.get("ServiceID")) for d in docs}
        nodes = {str(d.get("NodeID")) for d in docs if d.get("NodeID")}
        service_names = {
            str(doc["ID"]): str((doc.get("Spec") or {}).get("Name", ""))
            for doc in self._inspect_json("service", sorted(services))
        }
        return parse_tasks(
            docs, service_names, node_addresses(self._inspect_json("node", sorted(nodes)))
        )

    def _inspect_json(self, kind: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """``docker <kind> inspect`` of ``ids`` (task: ``docker inspect --type task``); the ones
        that went meanwhile are left out."""
        if not ids:
            return []
        ask = ["inspect", "--type", "task"] if kind == "task" else [kind, "inspect"]
        try:
            found = json.loads(self._docker(*ask, *ids) or "[]")
        except DockerException:
            found = []
            for one in ids:
                with contextlib.suppress(DockerException, ValueError):
                    found += json.loads(self._docker(*ask, one) or "[]")
        return [d for d in found if isinstance(d, dict)]

    def inspect(self, container_ids: Sequence[str]) -> tuple[ObservedContainer, ...]:
        """Tasks by id (an instance's id is its task's), history included."""
        return tuple(_drift(c) for c in self._inspect_tasks(list(container_ids)))

    def logs_tail(self, container_id: str) -> str:
        """The task's last lines, from whichever node runs it (`docker service logs`)."""
        try:
            text = self._docker(
                "service", "logs", "--raw", "--no-trunc", "--tail", "3", container_id
            )
        except DockerException:
            return "(no logs)"
        return " | ".join(line for line in text.splitlines() if line.strip()) or "(no output)"

    def _service_names(self) -> set[str]:
        """The project's services (stack ``<project>``)."""
        try:
            text = self._docker(
                "service", "ls", "--filter", f"label={PROJECT}={self.project}",
                "--format", "{{.Name}}",
            )  # fmt: skip
        except DockerException as err:
            raise DockerUnavailable(f"cannot list services: {_one_line(err)}") from err
        return set(text.split())

    def _task_errors(self, service: str) -> list[str]:
        """Swarm's own words for tasks that did not start, with the node and the image
        (``node2: registry:5000/p-api:1a2b: No such image: ...``)."""
        try:
            text = self._docker(
                "service", "ps", service, "--no-trunc",
                "--format", "{{.Node}}\t{{.Image}}\t{{.Error}}",
            )  # fmt: skip
        except DockerException:
            return []
        errors = set()
        for line in text.splitlines():
            node, _, rest = line.partition("\t")
            image, _, error = rest.partition("\t")
            if error.strip():
                errors.add(f"{node or 'no node'}: {image}: {error.strip()}")
        return sorted(errors)

    # -- making instances ------------------------------------------------------------------
    def _rendered(self) -> dict[str, Any]:
        """The stack file apply rendered (core/engines/swarm.py): its services by stack key."""
        doc = yaml.safe_load((self.folder / self.compose_file).read_text()) or {}
        return dict(doc.get("services") or {})

    def _stack_services(self) -> dict[str, str]:
        """Stack service key -> backend."""
        return {
            str(key): str((spec.get("labels") or {}).get(BACKEND, key))
            for key, spec in self._rendered().items()
        }

    def _stack_for(self, counts: Mapping[str, int]) -> tuple[Path, dict[str, Any]]:
        """The rendered stack narrowed to the backends in ``counts`` (its path, its services):
        backends roll out side by side, each its own call, and a deploy without ``--prune``
        leaves every service not in the file alone (another backend's, which may be being
        rolled back right now)."""
        services = {
            str(key): spec
            for key, spec in self._rendered().items()
            if (spec.get("labels") or {}).get(BACKEND) in counts
        }
        path = self.folder / STACK_FILE
        path.parent.mkdir(exist_ok=True)
        document = {"version": "3.8", "services": services}
        atomic_write(path, dump_yaml(document))
        return path, services

    def build(self, services: Sequence[str], *, progress: Progress | None = None) -> None:
        """``services`` are backend names: their stack services are built, then pushed."""
        keys = [key for key, backend in self._stack_services().items() if backend in services]
        super().build(keys, progress=progress)
        try:
            self._client.compose.push(keys)
        except DockerException as err:
            raise ApplyError(
                f"pushing the image of {', '.join(services)} failed: {_one_line(err)}",
                backend=services[0],
                detail=stderr_tail(err),
                hint="is `registry:` reachable from this host (and from every node)?",
            ) from err

    def scale(self, counts: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
        """Deploy the stack (the current versions, at their replica counts) until each backend
        in ``counts`` has that many instances; the old versions keep serving. Returns the new
        task containers per backend, counting ones that already ended (a new version that
        crashes at once is then seen, and rolled back, by the health wait). A new service
        whose tasks Swarm cannot run at all is removed again before the error."""
        # Tasks that started or ended before: a task Swarm made but not yet started is new.
        known = {c.id for c in self._tasks() if c.state != "created"}
        running = self.observe()
        live = {b: sum(1 for c in running if c.backend == b) for b in counts}
        existing = self._service_names()
        stack, services = self._stack_for(counts)
        try:
            self._docker(
                "stack", "deploy", "--compose-file", str(stack),
                "--resolve-image", "never", self.project,
            )  # fmt: skip
        except DockerException as err:
            raise ApplyError(
                f"docker stack deploy {self.project} failed: {_one_line(err)}",
                backend=next(iter(counts), None),
                detail=stderr_tail(err),
            ) from err
        keys = {key: str(spec["labels"][BACKEND]) for key, spec in services.items()}
        fresh = [f"{self.project}_{key}" for key in keys]
        fresh = [name for name in fresh if name not in existing]
        undone = self._undo_image_by_hand(
            {k: v for k, v in services.items() if f"{self.project}_{k}" in existing}
        )
        # A current version's service that exists already is at its replica count: Swarm
        # refills a task it lost (its node gone) itself, so no more than that is asked for.
        # Not a service whose image was just put back: Swarm's update makes new tasks for all
        # of its replicas, and they are what this replace waits for.
        for key, spec in services.items():
            backend, service = str(spec["labels"][BACKEND]), f"{self.project}_{key}"
            if service in existing and service not in undone and backend in counts:
                others = sum(
                    1 for c in running
                    if c.backend == backend and c.labels.get(SWARM_SERVICE) != service
                )  # fmt: skip
                replicas = int((spec.get("deploy") or {}).get("replicas") or 0)
                counts = {**counts, backend: min(counts[backend], others + replicas)}
        wanted = {b: max(n - live[b], 0) for b, n in counts.items()}
        try:
            return self._wait_tasks(wanted, keys, known)
        except ApplyError:
            if fresh:  # the new version goes; the old one never moved
                with contextlib.suppress(DockerException):
                    self._docker("service", "rm", *fresh)
            raise

    def _undo_image_by_hand(self, services: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """`docker stack deploy` keeps the image of a service whose file image did not change
        (it may have been pinned to a digest), so an image set by hand with `docker service
        update --image` survives it: put the file's image back explicitly. Returns the
        services updated."""
        undone: set[str] = set()
        for key, spec in services.items():
            service = f"{self.project}_{key}"
            image = str(spec.get("image", ""))
            try:
                running = self._docker(
                    "service", "inspect", service,
                    "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                ).strip()  # fmt: skip
                if image and running.split("@", 1)[0] != image:
                    self._docker("service", "update", "--detach", "--image", image, service)
                    undone.add(service)
            except DockerException as err:
                raise ApplyError(
                    f"putting {service} back on {image} failed: {_one_line(err)}",
                    detail=stderr_tail(err),
                ) from err
        return undone

    def _wait_tasks(
        self, wanted: Mapping[str, int], keys: Mapping[str, str], known: set[str]
    ) -> dict[str, tuple[str, ...]]:
        started = time.monotonic()
        while True:
            new: dict[str, list[str]] = {b: [] for b in wanted}
            services = [f"{self.project}_{key}" for key, b in keys.items() if b in wanted]
            for c in self._tasks(services=services):
                if c.backend in new and c.id not in known and c.state != "created":
                    new[c.backend].append(c.id)
                    self._born[c.id] = c.labels.get(SWARM_SERVICE, "")
            short = {b: n for b, n in wanted.items() if len(new[b]) < n}
            if not short:
                return {b: tuple(ids[: wanted[b]]) for b, ids in new.items()}
            name = next(iter(short))
            waited = time.monotonic() - started
            if waited > 5.0:  # Swarm retries a task that failed: its error is the answer
                errors = [
                    error
                    for key, backend in keys.items()
                    if backend in short
                    for error in self._task_errors(f"{self.project}_{key}")
                ]
                if errors:
                    raise ApplyError(
                        f"{name}: new version not started, rolled back (its service removed): "
                        f"Swarm says {'; '.join(errors[:3])}",
                        backend=name,
                    )
            if waited > self.tasks_deadline:
                raise ApplyError(
                    f"{name}: {len(new[name])} of {short[name]} new task containers after "
                    f"{self.tasks_deadline:g}s",
                    backend=name,
                )
            time.sleep(0.25)

    def up(self, services: Sequence[str], *, force_recreate: bool) -> None:
        raise ApplyError("engine: swarm runs no Compose services (proxy.mode: host only)")

    def start(self, container_ids: Sequence[str]) -> None:
        """Nothing to do: Swarm starts (and restarts) its tasks itself."""

    # -- unmaking instances ------------------------------------------------------------------
    def _services_of(self, container_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each Swarm service of ``container_ids`` (ended task containers included) -> the
        ids of its live tasks."""
        wanted = {
            service
            for c in self.inspect(container_ids)
            if (service := c.labels.get(SWARM_SERVICE)) is not None
        }
        wanted |= {self._born[i] for i in container_ids if self._born.get(i)}
        live: dict[str, list[str]] = {service: [] for service in wanted}
        for c in self.observe():
            service = c.labels.get(SWARM_SERVICE)
            if service in live:
                live[service].append(c.id)
        return live

    def discard(self, container_ids: Sequence[str]) -> None:
        """A new version this pass created and never routed: its whole service goes (Swarm
        keeps restarting a task that crashes, so its containers alone would come back)."""
        services = self._services_of(container_ids)
        self._remove_services(list(services))
        self._wait_gone([i for ids in services.values() for i in ids])

    def stop_remove(self, container_ids: Sequence[str]) -> None:
        """Drained instances go. A version leaves whole (the plan retires every task of an
        old service at once): its service is removed and its tasks stop with their grace
        period. Only some tasks of a current version (drift: scaled up by hand) is a scale
        down of that service, where Swarm picks which tasks stop."""
        if not container_ids:
            return
        current = {f"{self.project}_{key}" for key in self._stack_services()}
        gone, fewer = [], {}
        services = self._services_of(container_ids)
        for service, live in services.items():
            left = [i for i in live if i not in container_ids]
            if service not in current or not left:
                gone.append(service)
            else:
                fewer[service] = len(left)
        self._remove_services(gone)
        for service, replicas in fewer.items():
            try:
                self._docker("service", "scale", "--detach", f"{service}={replicas}")
            except DockerException as err:
                raise ApplyError(
                    f"scaling {service} to {replicas} failed: {_one_line(err)}",
                    detail=stderr_tail(err),
                ) from err
        self._wait_gone([i for service in gone for i in services[service]])

    def _remove_services(self, services: Sequence[str]) -> None:
        if not services:
            return
        try:
            self._docker("service", "rm", *services)
        except DockerException as err:
            if "not found" not in (err.stderr or "").lower():
                raise ApplyError(
                    f"removing {', '.join(services)} failed: {_one_line(err)}",
                    detail=stderr_tail(err),
                ) from err

    def _wait_gone(self, ids: Sequence[str]) -> None:
        deadline = time.monotonic() + self.tasks_deadline
        while ids and time.monotonic() < deadline:
            left = {c.id for c in self.inspect(ids) if c.state not in _ENDED}
            if not left:
                return
            time.sleep(0.25)

    def remove(self, container_ids: Sequence[str]) -> None:
        self.stop_remove(container_ids)

    def remove_network(self) -> None:
        """`lbrec up --down`: the whole stack goes (services, then its network)."""
        try:
            self._docker("stack", "rm", self.project)
        except DockerException as err:
            raise ApplyError(f"docker stack rm {self.project} failed: {_one_line(err)}") from err


_ENDED = ("exited", "dead", "removing")

_FIELD_IMAGE = FIELD_PREFIX + "image"
_FIELD_BUILD = FIELD_PREFIX + "build"


def _drift(c: ObservedContainer) -> ObservedContainer:
    """A task of an ``image:`` backend running another image than lbrec deployed: its service
    was updated by hand (`docker service update --image`). Its labels (the service's container
    labels, which such an update keeps) then say what runs, so the plan sees a version to
    replace, with the image as the reason, and deploys lbrec's service spec back."""
    if SWARM_TASK not in c.labels or c.labels.get(_FIELD_BUILD):
        return c
    deployed = c.labels.get(_FIELD_IMAGE)
    running = c.image.split("@", 1)[0]
    if not deployed or not running or running == deployed:
        return c
    labels = {**c.labels, _FIELD_IMAGE: running, CONFIG_HASH: "changed-by-hand"}
    return replace(c, labels=labels)
