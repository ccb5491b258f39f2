"""EDGE. `docker inspect` JSON parsed into frozen ObservedContainer snapshots (no lazy objects)."""

from __future__ import annotations

import json
from typing import Any

from ..core.errors import DockerUnavailable
from ..core.labels import BACKEND, PORT_FIELD, ROLE
from ..core.state import ObservedContainer


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
                endpoint=_endpoint(doc, labels.get(PORT_FIELD)),
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
