"""EDGE. engine: swarm: what Swarm's API says of the project's tasks, as instances.

Discovery across nodes comes from the manager alone: the tasks of the project's services
(``docker inspect --type task``) with the node each runs on (``docker node inspect``: its
address) and the port it published there in host mode (``Status.PortStatus``). An instance is
a task (its id is the task's), reached at ``<node address>:<published port>`` wherever Swarm
scheduled it; no ``docker ps`` on any engine is needed. A task on a node that is Down (the
manager lost its heartbeat) or drained is no instance: what the manager last
heard of it may be stale (a partitioned node), and Swarm reschedules it elsewhere. Parsing
only: the calls are in swarm_query.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ...core.labels import BACKEND, PORT_FIELD, SWARM_NODE, SWARM_SERVICE, SWARM_TASK
from ...core.state import ObservedContainer

__all__ = [
    "STARTED",
    "Endpoint",
    "Node",
    "container_of",
    "node_addresses",
    "parse_task",
    "parse_tasks",
]


Endpoint = tuple[str, str]  # (container id, "<node address>:<published port>")

_LOST = ("down", "disconnected")  # Swarm's node states whose tasks are not routed


class Node(NamedTuple):
    hostname: str
    address: str
    ready: bool = True  # Status.State not down/disconnected, Spec.Availability not drain


# Swarm's task states as an instance's (state, health). A task is "starting" until its
# container's healthcheck passes (a container without one goes straight to running).
_STATES: dict[str, tuple[str, str | None]] = {
    "starting": ("running", "starting"),
    "running": ("running", None),
    "complete": ("exited", None),
    "failed": ("exited", None),
    "shutdown": ("exited", None),
    "rejected": ("dead", None),
    "orphaned": ("dead", None),
    "remove": ("removing", None),
}
STARTED = frozenset(_STATES)  # a state past preparing: the task has (or had) a container


def node_addresses(docs: Iterable[Mapping[str, Any]]) -> dict[str, Node]:
    """Node id -> (hostname, address, ready) from ``docker node inspect``. A manager may
    report ``0.0.0.0`` as its address: its manager address is used then. A node is ready unless
    Swarm says it is down (``Status.State``) or it is being drained."""
    out: dict[str, Node] = {}
    for doc in docs:
        address = str((doc.get("Status") or {}).get("Addr") or "")
        if address in ("", "0.0.0.0"):
            manager = str((doc.get("ManagerStatus") or {}).get("Addr") or "")
            address = manager.rsplit(":", 1)[0] if manager else address
        hostname = str((doc.get("Description") or {}).get("Hostname") or "")
        state = str((doc.get("Status") or {}).get("State") or "ready")
        availability = str((doc.get("Spec") or {}).get("Availability") or "active")
        # Not "unknown": a newly elected leader says it of every node until each reconnects
        # (seconds), and their tasks run on meanwhile; Down is a lost heartbeat.
        ready = state not in _LOST and availability != "drain"
        out[str(doc["ID"])] = Node(hostname, address, ready)
    return out


def parse_task(
    doc: Mapping[str, Any],
    services: Mapping[str, str],
    nodes: Mapping[str, Node],
    remembered: Mapping[str, Endpoint] | None = None,
) -> ObservedContainer | None:
    """One task as an instance, or None when it is none of lbrec's (no backend label).
    ``remembered``: task id -> (container id, endpoint) seen before, for a running task
    whose published port the manager no longer says (see :func:`container_of`)."""
    spec = (doc.get("Spec") or {}).get("ContainerSpec") or {}
    labels = {str(k): str(v) for k, v in (spec.get("Labels") or {}).items()}
    backend = labels.get(BACKEND)
    if not backend:
        return None
    status = doc.get("Status") or {}
    state, health = _STATES.get(str(status.get("State", "")), ("created", None))
    service = services.get(str(doc.get("ServiceID", "")), "")
    node_id = str(doc.get("NodeID") or "")
    hostname, address, ready = nodes.get(node_id, Node("", ""))
    if not ready and state not in ("exited", "removing"):
        state, health = "dead", None  # its node is lost or drained: not an instance
    labels[SWARM_TASK] = str(doc["ID"])
    labels[SWARM_SERVICE] = service
    # `lbrec status` shows it: a hostname alone may not tell nodes apart (containers, VMs)
    labels[SWARM_NODE] = f"{hostname or node_id[:12]} {address}".strip()
    endpoint = None
    if state == "running" and address:
        host = f"[{address}]" if ":" in address else address
        for port in (status.get("PortStatus") or {}).get("Ports") or []:
            if str(port.get("TargetPort")) == labels.get(PORT_FIELD) and port.get("PublishedPort"):
                endpoint = f"{host}:{port['PublishedPort']}"
                break
    if state == "running" and endpoint is None:
        # After a leader election the manager's copy of a running task's status comes back
        # without its published ports (PortStatus empty; seen with Swarm 20.10): the same
        # container on the same node still publishes the port it was seen with.
        container = container_of(doc)
        before = (remembered or {}).get(str(doc["ID"]))
        if before is not None and container and before[0] == container:
            endpoint = before[1]
    if state == "running" and endpoint is None:
        # Running, but the manager has not heard the port it published (a task just
        # started, or its node's address is unknown): not an instance yet, as one not yet
        # started (never "an instance that publishes no port", which a plan would replace).
        state, health = "created", None
    slot = doc.get("Slot")
    return ObservedContainer(
        id=str(doc["ID"]),
        backend=backend,
        state=state,
        health=health,
        labels=labels,
        image=str(spec.get("Image") or "").split("@", 1)[0],
        started_at=str(status.get("Timestamp") or "") or None,
        name=f"{service}.{slot}" if slot else f"{service}.{node_id[:12]}",
        endpoint=endpoint,
    )


def container_of(doc: Mapping[str, Any]) -> str:
    """The id of the task's container ("" before it has one)."""
    return str(((doc.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") or "")


def parse_tasks(
    docs: Iterable[Mapping[str, Any]],
    services: Mapping[str, str],
    nodes: Mapping[str, Node],
    remembered: Mapping[str, Endpoint] | None = None,
) -> tuple[ObservedContainer, ...]:
    return tuple(
        c for doc in docs if (c := parse_task(doc, services, nodes, remembered)) is not None
    )
