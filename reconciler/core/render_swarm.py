"""PURE. engine: swarm: the desired state as a stack file (`docker stack deploy` reads it).

One Swarm service per backend *version*: ``<backend>-<config hash>``. A new version (a new
image, new settings, a new replica count) is a new service beside the old one, so lbrec drives
start first itself: the new service's tasks answer healthy, they are routed, the old service's
tasks are drained, and only then is the old service removed. Swarm's own update machinery is
never asked to replace a routed task, because Swarm cannot drain one before stopping it (its
routing mesh keeps sending to tasks that shut down: moby#38841, #26672, #30321); the proxy
reaches each task directly at its host-mode published port, never through the mesh.

The file holds the services of the current versions only: deployed without ``--prune``, it
adds the new version and leaves the old one serving until lbrec removes it.
"""

from __future__ import annotations

from typing import cast

from .labels import BACKEND, CONFIG_HASH, PROJECT, BuildInfo, config_hash
from .render import backend_service, compose_duration, dump_document, literal
from .spec import BackendSpec, DesiredState

__all__ = ["render_stack", "swarm_service"]


def swarm_service(desired: DesiredState, backend: BackendSpec, build: BuildInfo) -> str:
    """The stack's name for ``backend``'s current version (Swarm adds ``<project>_``)."""
    return f"{backend.name}-{config_hash(backend, desired, build)[:10]}"


def _stack_service(
    desired: DesiredState, backend: BackendSpec, build: BuildInfo, revision: str | None
) -> dict[str, object]:
    service = backend_service(desired, backend, build, revision)
    labels = cast(dict[str, str], service["labels"])  # the task containers' (labels.py)
    service.pop("scale", None)
    service.pop("restart", None)  # Swarm restarts tasks itself (deploy.restart_policy)
    # Host mode: each task publishes its own port on its node (Docker picks it), and the
    # proxy routes to exactly the tasks lbrec discovered, never through the routing mesh.
    service["ports"] = [{"target": backend.port, "protocol": "tcp", "mode": "host"}]
    rollout = backend.rollout_of(desired)
    service["deploy"] = {
        "mode": "replicated",
        "replicas": backend.replicas,
        "labels": {key: labels[key] for key in (PROJECT, BACKEND, CONFIG_HASH)},
        # For changes made outside lbrec (`docker service update`): start first, and back.
        "update_config": {
            "order": "start-first",
            "parallelism": rollout.max_parallel,
            "failure_action": "rollback",
            "monitor": compose_duration(rollout.min_healthy_time),
        },
        "rollback_config": {"order": "start-first", "parallelism": rollout.max_parallel},
        "restart_policy": {"condition": "any", "delay": "1s"},
    }
    service["stop_grace_period"] = compose_duration(max(rollout.drain_timeout, 1.0))
    return service


def render_stack(
    desired: DesiredState,
    build: BuildInfo,
    *,
    source: str = "desired-state.yaml",
    revisions: dict[str, str] | None = None,
) -> str:
    """docker-compose.yml for engine: swarm: a stack file (Compose format 3.8)."""
    revisions = revisions or {}
    services = {
        swarm_service(desired, backend, build): _stack_service(
            desired, backend, build, revisions.get(backend.name)
        )
        for backend in desired.backends
    }
    document: dict[str, object] = {"version": "3.8", "services": literal(services)}
    return dump_document(document, source)
