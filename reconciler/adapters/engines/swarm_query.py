"""EDGE. engine: swarm: what runs, asked of the manager (the reading half of SwarmDocker).

``SwarmQueries`` finds the project's instances from the manager's API alone (swarm_tasks.py
parses the answers): each task Swarm wants running whose container started, on whatever node,
reached at ``<node address>:<port it published there in host mode>``. A task that ended is
history (Swarm keeps it), not an instance, and so is a task on a node that is Down or
drained: the manager cannot hear from a Down node (its engine stopped, its link cut), so what
it last said of its tasks is stale; Swarm starts replacements elsewhere. (A node a newly
elected leader calls "unknown" until it reconnects is not lost: its tasks stay routed.) An
instance's id is its task's id. Making and unmaking instances: swarm.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run as run_docker

from ...core.defaults import STATE_DIR
from ...core.errors import DockerUnavailable
from ...core.labels import CONFIG_HASH, FIELD_PREFIX, PROJECT, SWARM_TASK
from ...core.state import ObservedContainer
from ..files import atomic_write
from .compose import ComposeDocker, _one_line
from .swarm_tasks import Endpoint, container_of, node_addresses, parse_tasks

__all__ = ["ENDED", "SwarmQueries"]

ENDED = ("exited", "dead", "removing")


class SwarmQueries(ComposeDocker):
    """ComposeDocker's images and health waits; the manager's API for what runs."""

    def __init__(self, *, folder: Path, project: str, compose_file: str) -> None:
        super().__init__(folder=folder, project=project, compose_file=compose_file)
        self.folder = folder

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

    def observe(self) -> tuple[ObservedContainer, ...]:
        """The project's instances: tasks Swarm wants running whose container started, on a
        node that is not Down or drained (a task marked for shutdown, or on a node the
        manager lost, leaves the pool at once), each on its node's address."""
        return tuple(
            _drift(c) for c in self._tasks(wanted_only=True) if c.state not in ("created", *ENDED)
        )

    def _tasks(
        self, *, wanted_only: bool = False, services: Sequence[str] | None = None
    ) -> tuple[ObservedContainer, ...]:
        """Every task of the project's services (or of ``services``), history included unless
        ``wanted_only``, that has or had a container."""
        names = sorted(self._service_names() if services is None else services)
        if not names:
            return ()
        ids = self._task_ids(names, wanted_only=wanted_only)
        return self._inspect_tasks(sorted(ids))

    def _task_ids(self, services: Sequence[str], *, wanted_only: bool = False) -> set[str]:
        ask = ["service", "ps", "-q", "--no-trunc"]
        if wanted_only:
            ask += ["--filter", "desired-state=running"]
        ids: set[str] = set()
        try:
            ids = set(self._docker(*ask, *services).split())
        except DockerException:  # one of them went meanwhile: ask each
            for name in services:
                with contextlib.suppress(DockerException):
                    ids |= set(self._docker(*ask, name).split())
        return ids

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
        remembered = self._endpoints()
        tasks = parse_tasks(
            docs, service_names, node_addresses(self._inspect_json("node", sorted(nodes))),
            remembered,
        )  # fmt: skip
        self._remember(docs, tasks, remembered)
        return tasks

    # -- the endpoints seen: a leader election loses the manager's copy of them ---------
    @property
    def _endpoints_file(self) -> Path:
        return self.folder / STATE_DIR / "swarm-endpoints.json"

    def _endpoints(self) -> dict[str, Endpoint]:
        """task id -> (container id, endpoint), as last seen (.lbrec/swarm-endpoints.json)."""
        try:
            data = json.loads(self._endpoints_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(k): (str(v[0]), str(v[1]))
            for k, v in data.items()
            if isinstance(v, list) and len(v) == 2
        }

    def _remember(
        self,
        docs: Sequence[dict[str, Any]],
        tasks: Sequence[ObservedContainer],
        remembered: dict[str, Endpoint],
    ) -> None:
        """Keep the endpoint of every running task seen, forget the tasks that ended."""
        containers = {str(d["ID"]): container_of(d) for d in docs}
        now = dict(remembered)
        for c in tasks:
            if c.state == "running" and c.endpoint and containers.get(c.id):
                now[c.id] = (containers[c.id], c.endpoint)
            elif c.state in ENDED:
                now.pop(c.id, None)
        if now != remembered and self._endpoints_file.parent.is_dir():
            with contextlib.suppress(OSError):
                atomic_write(self._endpoints_file, json.dumps(now, sort_keys=True) + "\n")

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
        """Swarm's own words for tasks that did not start, each with its node (hostname and
        address: nodes may share a hostname) and its image
        (``node2 198.18.7.11: registry:5000/p-api:1a2b: No such image: ...``)."""
        docs = self._inspect_json("task", sorted(self._task_ids([service])))
        nodes = node_addresses(
            self._inspect_json("node", sorted({str(d["NodeID"]) for d in docs if d.get("NodeID")}))
        )
        errors = set()
        for doc in docs:
            error = str((doc.get("Status") or {}).get("Err") or "").strip()
            if not error:
                continue
            node = nodes.get(str(doc.get("NodeID") or ""))
            where = f"{node.hostname} {node.address}".strip() if node else "no node"
            spec = (doc.get("Spec") or {}).get("ContainerSpec") or {}
            image = str(spec.get("Image") or "").split("@", 1)[0]
            errors.add(f"{where or 'no node'}: {image}: {error}")
        return sorted(errors)


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
