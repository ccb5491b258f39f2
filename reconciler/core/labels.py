"""PURE. The label contract between lbrec and its containers, and the config hash.

Labels are the only memory lbrec keeps on the engine: which containers are its own
(``lbrec.project``), for which backend, and a hash of every container-relevant setting so that
a change is detected and explained without reading anything else.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from ...proxy.config import split_hostport
from .engines.auto import engine_rules
from .spec import BackendSpec, DesiredState

__all__ = [
    "BACKEND",
    "CONFIG_HASH",
    "FIELD_PREFIX",
    "MANAGED",
    "PORT_FIELD",
    "PROJECT",
    "REVISION",
    "ROLE",
    "SWARM_NODE",
    "SWARM_SERVICE",
    "SWARM_TASK",
    "TRACKED",
    "BuildInfo",
    "backend_labels",
    "canonical_hash",
    "container_fields",
]

MANAGED = "lbrec.managed"
PROJECT = "lbrec.project"
BACKEND = "lbrec.backend"
ROLE = "lbrec.role"
CONFIG_HASH = "lbrec.config-hash"
REVISION = "lbrec.revision"
# Labels Swarm puts on its task containers (engine: swarm).
SWARM_SERVICE = "com.docker.swarm.service.name"
SWARM_TASK = "com.docker.swarm.task.id"
SWARM_NODE = "com.docker.swarm.node.id"
FIELD_PREFIX = _PREFIX = "lbrec.field."
PORT_FIELD = _PREFIX + "port"  # the container port instances serve on (its endpoint is read back)


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """What the images are built from, resolved at the edge (environment, build context)."""

    base_image: str | None  # None: the Dockerfile's own default
    context_digest: str  # hash of Dockerfile.backend and the files it copies
    proxy_digest: str = ""  # hash of Dockerfile.proxy and the staged proxy (container mode)
    # The lb image's base (container mode): the operator's environment, never the file's
    proxy_base_image: str | None = None
    # backend name -> hash of its `build:` context folder (backends with a build section)
    build_digests: Mapping[str, str] = field(default_factory=dict)

    def digest_of(self, backend: BackendSpec) -> str:
        """The digest of what the backend's image is built from ("" for a pulled image)."""
        if backend.image is not None:
            return ""
        if backend.build is not None:
            spec = canonical_hash(backend.build.model_dump(mode="json"))
            return canonical_hash([self.build_digests.get(backend.name, ""), spec])
        return self.context_digest


def canonical_hash(value: object) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace): stable across key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# How an instance's port is published: `dynamic` is a host port Docker allocates on
# publish_host (read back from the container), so that two instances of one backend can live
# side by side during a rollout. Containers of lbrec before 0.3 published `port` itself; they
# carry no such label and are replaced, start first, on the first apply.
PUBLISH = "dynamic"


def _command_label(command: tuple[str, ...] | None) -> str:
    """Readable in a plan (`command bin/server --port 8000 -> ...`); a long one is cut and
    keeps a hash of the whole, so that any change still changes the label."""
    if command is None:
        return "(image default)"
    text = shlex.join(command)
    if len(text) <= 60:
        return text
    return f"{text[:48]}... #{canonical_hash(list(command))[:8]}"


# The restrictions every backend container runs with (render.py): a change replaces them.
BACKEND_SECURITY = "cap_drop=NET_RAW"


def container_fields(
    backend: BackendSpec, desired: DesiredState, build: BuildInfo
) -> dict[str, str]:
    """Every setting that needs a new container when it changes (not weight), and those the
    engine adds (core/engines/: on Swarm the replica count, each version being a service)."""
    if backend.image is not None:
        image = backend.image
    elif backend.build is not None:
        image = f"build {backend.build.context}"
    else:
        image = build.base_image or "(Dockerfile default)"
    fields = {
        "port": str(backend.port),
        "publish": PUBLISH,
        "publish_host": desired.publish_host,
        "image": image,
        "build": build.digest_of(backend)[:12],
        "env": canonical_hash(backend.env)[:12],
        "command": _command_label(backend.command),
        "health_path": backend.health_path(desired),
        "healthcheck": f"timeout={desired.health.timeout:g}s,fall={desired.health.fall}",
        "security": BACKEND_SECURITY,
    }
    fields.update(engine_rules(desired.engine).version_fields(desired, backend))
    return fields


# Human names of the tracked fields, in the order reasons are given.
TRACKED: tuple[str, ...] = (
    "port",
    "publish",
    "publish_host",
    "image",
    "build",
    "env",
    "command",
    "health_path",
    "healthcheck",
    "security",
)


def backend_labels(
    backend: BackendSpec, desired: DesiredState, build: BuildInfo, *, revision: str | None = None
) -> dict[str, str]:
    fields = container_fields(backend, desired, build)
    labels = {
        MANAGED: "true",
        PROJECT: desired.project,
        ROLE: "backend",
        BACKEND: backend.name,
        CONFIG_HASH: config_hash(backend, desired, build),
    }
    labels.update({_PREFIX + key: value for key, value in fields.items()})
    if revision:
        labels[REVISION] = revision
    return labels


def config_hash(backend: BackendSpec, desired: DesiredState, build: BuildInfo) -> str:
    """The ``lbrec.config-hash`` a current container of ``backend`` carries."""
    return canonical_hash(container_fields(backend, desired, build))[:16]


def lb_fields(desired: DesiredState, build: BuildInfo) -> dict[str, str]:
    """Settings of the load balancer's own container (proxy.mode: container)."""
    return {
        "listen": desired.listen,
        "admin": desired.admin,
        "image": build.proxy_base_image or "(Dockerfile default)",
        "build": build.proxy_digest[:12],
        "user": lb_user(desired),
    }


# The lb's unprivileged user: nobody, present in Debian's and the official python images.
LB_USER = "65534:65534"


def lb_user(desired: DesiredState) -> str:
    """Who the lb process runs as: nobody, unless a listener is on a port below 1024, which
    needs CAP_NET_BIND_SERVICE. Docker gives a non-root process no ambient capabilities, so
    then it is root with that one capability and nothing else (docs/security.md)."""
    return "0:0" if low_port(desired) else LB_USER


def low_port(desired: DesiredState) -> bool:
    """A listener of the lb below 1024 (privileged ports)."""
    return any(split_hostport(hostport)[1] < 1024 for hostport in (desired.listen, desired.admin))


def lb_labels(desired: DesiredState, build: BuildInfo) -> dict[str, str]:
    fields = lb_fields(desired, build)
    labels = {
        MANAGED: "true",
        PROJECT: desired.project,
        ROLE: "lb",
        CONFIG_HASH: canonical_hash(fields)[:16],
    }
    labels.update({_PREFIX + key: value for key, value in fields.items()})
    return labels


def changed_fields(labels: Mapping[str, str], fields: Mapping[str, str]) -> list[str]:
    """Reasons as `port 9001 -> 9005`, from the labels a container carries."""
    reasons = []
    for key in fields:
        before = labels.get(_PREFIX + key)
        after = fields[key]
        if before != after:
            reasons.append(f"{key} {before or '(unset)'} -> {after}")
    return reasons


__all__ += [
    "LB_USER",
    "changed_fields",
    "config_hash",
    "lb_fields",
    "lb_labels",
    "lb_user",
    "low_port",
]
