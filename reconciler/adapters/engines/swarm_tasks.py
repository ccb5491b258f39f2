"""EDGE. engine: swarm: what Swarm's API says of the project's tasks, as instances.

Discovery across nodes comes from the manager alone: the tasks of the project's services
(``docker inspect --type task``) with the node each runs on (``docker node inspect``: its
address) and the port it published there in host mode (``Status.PortStatus``). An instance is
a task (its id is the task's), reached at ``<node address>:<published port>`` wherever Swarm
scheduled it; no ``docker ps`` on any engine is needed. A task on a node that is not Ready
and Active (Down: the manager lost its heartbeat; Drain) is no instance: what the manager last
heard of it may be stale (a partitioned node), and Swarm reschedules it elsewhere. Parsing
only: the calls are in swarm_query.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ...core.labels import BACKEND, PORT_FIELD, SWARM_NODE, SWARM_SERVICE, SWARM_TASK
from ...core.state import ObservedContainer

__all__ = ["STARTED", "Node", "node_addresses", "parse_task", "parse_tasks"]


class Node(NamedTuple):
    hostname: str
    address: str
    ready: bool = True  # Status.State ready and Spec.Availability not drain


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
    report ``0.0.0.0`` as its address: its manager address is used then. A node is ready when
    Swarm says it is (``Status.State``) and it is not being drained."""
    out: dict[str, Node] = {}
    for doc in docs:
        address = str((doc.get("Status") or {}).get("Addr") or "")
        if address in ("", "0.0.0.0"):
            manager = str((doc.get("ManagerStatus") or {}).get("Addr") or "")
            address = manager.rsplit(":", 1)[0] if manager else address
        hostname = str((doc.get("Description") or {}).get("Hostname") or "")
        state = str((doc.get("Status") or {}).get("State") or "ready")
        availability = str((doc.get("Spec") or {}).get("Availability") or "active")
        out[str(doc["ID"])] = Node(hostname, address, state == "ready" and availability != "drain")
    return out


def parse_task(
    doc: Mapping[str, Any], services: Mapping[str, str], nodes: Mapping[str, Node]
) -> ObservedContainer | None:
    """One task as an instance, or None when it is none of lbrec's (no backend label)."""
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


def parse_tasks(
    docs: Iterable[Mapping[str, Any]], services: Mapping[str, str], nodes: Mapping[str, Node]
) -> tuple[ObservedContainer, ...]:
    return tuple(c for doc in docs if (c := parse_task(doc, services, nodes)) is not None)
