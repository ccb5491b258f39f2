"""PURE. engine: swarm: a Docker Swarm, deployed from a stack file (`docker stack deploy`); its
adapter: adapters/engines/swarm.py.

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

from collections.abc import Mapping
from typing import cast

from ..labels import BACKEND, CONFIG_HASH, PROJECT, BuildInfo, config_hash
from ..render import backend_service, compose_duration
from ..spec import BackendSpec, DesiredState
from .base import Rules

__all__ = ["RULES", "VERSION_FIELDS", "render_stack_file", "swarm_service"]

# Settings that need a new service on Swarm only (absent on compose, so its hashes never moved).
VERSION_FIELDS: tuple[str, ...] = ("engine", "replicas")


class _Swarm(Rules):
    name = "swarm"
    # A version is one service: it comes whole (every new task, waited for and routed) and the
    # old one leaves whole after it, since Swarm cannot be told which of a service's tasks to
    # stop: no routed task is ever left to its choice. So a new replica count is a new version.
    whole_versions = True

    def version_fields(self, desired: DesiredState, backend: BackendSpec) -> dict[str, str]:
        del desired
        return {"engine": "swarm", "replicas": str(backend.replicas)}

    def image_reference(self, desired: DesiredState, tag: str) -> str:
        """Every node pulls what lbrec builds from ``registry:``."""
        return f"{desired.registry.rstrip('/')}/{tag}" if desired.registry else tag

    def refusal(self, desired: DesiredState) -> str | None:
        if desired.proxy.mode == "container":
            return (
                "proxy.mode: 'container' is not supported with engine: swarm; run the proxy "
                "on a manager (proxy.mode: host, `lbrec up`); see docs/swarm.md"
            )
        if desired.registry is None:
            for index, backend in enumerate(desired.backends):
                if backend.image is None:
                    what = "build" if backend.build is not None else "the demo Dockerfile.backend"
                    return (
                        f"backends[{index}] ({backend.name}): built from {what}, but engine: "
                        "swarm nodes pull their images: set `registry:` (e.g. 127.0.0.1:5000) "
                        "to push it to, or give the backend an `image:`"
                    )
        return None

    def top(self, desired: DesiredState) -> dict[str, object]:
        del desired
        return {"version": "3.8"}

    def services(
        self, desired: DesiredState, build: BuildInfo, revisions: Mapping[str, str]
    ) -> Mapping[str, object]:
        return {
            swarm_service(desired, backend, build): _stack_service(
                desired, backend, build, revisions.get(backend.name)
            )
            for backend in desired.backends
        }


RULES = _Swarm()
# docker-compose.yml for engine: swarm: a stack file (Compose format 3.8).
render_stack_file = RULES.deploy_file


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
