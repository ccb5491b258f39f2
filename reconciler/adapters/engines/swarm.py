"""EDGE. engine: swarm: the DockerPort over a Docker Swarm (docs/swarm.md).

The engine's plan and rollout steps are the same as on Compose; what differs is how an
instance is made and unmade. Here an instance is a Swarm *task*, and a backend version is a
*service* (core/engines/swarm.py):

* ``observe``: the tasks of the project's services, from the manager's API alone
  (swarm_query.py, the reading half, and swarm_tasks.py): each task Swarm wants running whose
  container started, on a node that is not Down or drained, reached at ``<node address>:<port
  it published there in host mode>``; a task that ended is history (Swarm keeps it), not an
  instance. An instance's id is its task's id.
* ``scale``: deploys the stack file (without ``--prune``: the old version keeps serving) and
  waits until the new tasks have containers (their images pulled by their nodes); a task Swarm
  cannot start (no such image, no resources) is reported with Swarm's own error, naming the
  node and the image.
* ``discard``: a new version that failed goes whole; a task that failed in a service that
  also runs others (a current version refilling a lost node) is left to Swarm to retry.
* ``stop_remove``: a version leaves whole (lbrec drained its tasks first): ``docker service
  rm``, then waits until its containers are gone. Removing only some of a service's tasks is
  a scale down where Swarm picks the tasks (only drift repair does that).
* ``build``: Compose builds the image and pushes it to ``registry:``; Swarm nodes pull it.

Tested on a single-node swarm and on swarms of 3 engines of the test's own
(tests/integration/test_swarm_nodes.py, docs/swarm.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from python_on_whales.exceptions import DockerException

from ...core.defaults import STACK_FILE
from ...core.errors import ApplyError
from ...core.labels import BACKEND, SWARM_SERVICE
from ...core.ports import Progress
from ...core.render import dump_yaml
from ..files import atomic_write
from .compose import _one_line, stderr_tail
from .swarm_query import ENDED, SwarmQueries

__all__ = ["SwarmDocker"]

# How long a deployed service may take to have containers for its tasks (pulls included).
TASKS_DEADLINE = 120.0


class SwarmDocker(SwarmQueries):
    """What runs from the manager (SwarmQueries); making and unmaking instances here."""

    def __init__(
        self,
        *,
        folder: Path,
        project: str,
        compose_file: str,
        tasks_deadline: float = TASKS_DEADLINE,
    ) -> None:
        super().__init__(folder=folder, project=project, compose_file=compose_file)
        self.compose_file = compose_file
        self.tasks_deadline = tasks_deadline
        # The service of each task container scale() made: Swarm deletes the containers of a
        # crash-looping task soon, and discard() must still find the service to remove.
        self._born: dict[str, str] = {}
        # The services scale() created (none of their tasks was ever routed).
        self._created: set[str] = set()

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
        rendered = self._rendered()
        images = sorted({str(rendered[key].get("image", key)) for key in keys})
        try:
            self._client.compose.push(keys)
        except DockerException as err:
            raise ApplyError(
                f"pushing {', '.join(images)} (the image of {', '.join(services)}) failed, "
                f"nothing was deployed: {_one_line(err)}",
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
        # A service made by an earlier call is now an existing version (maybe routed).
        self._created -= {name for name in fresh if name in existing}
        fresh = [name for name in fresh if name not in existing]
        self._created.update(fresh)
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
        """Instances this pass made and never routed. A service scale() created, or one with
        no other live task, goes whole (Swarm keeps restarting a task that crashes, so its
        containers alone would come back). A service that also runs other tasks (a current
        version whose tasks Swarm refills after a node was lost) stays: those may be routed,
        and Swarm retries the failed task itself."""
        services = self._services_of(container_ids)
        gone = [
            service
            for service, live in services.items()
            if service in self._created or all(i in container_ids for i in live)
        ]
        self._remove_services(gone)
        self._wait_gone([i for service in gone for i in services[service]])

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
            left = {c.id for c in self.inspect(ids) if c.state not in ENDED}
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
