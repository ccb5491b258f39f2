"""PURE. engine: compose: the instances are containers of one Compose project on one Docker
engine, deployed from docker-compose.yml (its adapter: adapters/engines/compose.py).

A backend is one Compose service whose instances Compose scales up beside the old ones, so a
rollout replaces them in batches of ``max_parallel``; the load balancer itself may be a
service of the project (proxy.mode: container).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..labels import BuildInfo, lb_labels, lb_user, low_port
from ..render import LB_SERVICE, PROXY_DOCKERFILE, backend_service
from ..spec import DesiredState
from .base import Rules

__all__ = ["RULES", "lb_service", "render_compose_file"]


class _Compose(Rules):
    """A Compose project: the instances of a backend are one service's containers; the
    version and image answers are the base's (the hashes of compose stay what they always
    were; an image built here runs here)."""

    name = "compose"

    def top(self, desired: DesiredState) -> dict[str, object]:
        return {"name": desired.project}

    def services(
        self, desired: DesiredState, build: BuildInfo, revisions: Mapping[str, str]
    ) -> Mapping[str, object]:
        services = {
            backend.name: backend_service(desired, backend, build, revisions.get(backend.name))
            for backend in desired.backends
        }
        if desired.proxy.mode == "container":
            services[LB_SERVICE] = lb_service(desired, build)
        return services


RULES = _Compose()
# The whole docker-compose.yml (``revisions``: backend -> deployed git commit).
render_compose_file = RULES.deploy_file


def lb_service(desired: DesiredState, build: BuildInfo) -> dict[str, object]:
    """The load balancer as a Compose service (proxy.mode: container).

    Host networking: the proxy binds `listen`/`admin` on the host itself (so 127.0.0.1 stays
    possible) and reaches backends at the same http://127.0.0.1:PORT URLs as in host mode, so one
    backends.json serves both modes. `config/` is mounted read-only as a folder: a single-file
    bind mount would pin the old inode and miss the atomic rename of backends.json.
    """
    build_section: dict[str, object] = {"context": ".", "dockerfile": PROXY_DOCKERFILE}
    if build.proxy_base_image:
        build_section["args"] = {"BASE_IMAGE": build.proxy_base_image}
    probe = (
        "import urllib.request;"
        f"urllib.request.urlopen('http://{desired.admin}/-/healthz',timeout=2)"
    )
    return {
        "build": build_section,
        "image": f"{desired.project}-lb:{build.proxy_digest[:12]}",
        "command": ["python3", "-m", "proxy", "--config", "/config/backends.json"],
        "network_mode": "host",
        # The operator's admin settings reach the container from lbrec's own environment at
        # `compose up` (a null value: taken from the environment), never written in this file.
        "environment": {"LBREC_ADMIN_TOKEN": None, "LBREC_ADMIN_HOSTS": None},
        # Least privilege (docs/security.md): it only reads its pool and serves sockets.
        "user": lb_user(desired),
        "cap_drop": ["ALL"],
        **({"cap_add": ["NET_BIND_SERVICE"]} if low_port(desired) else {}),
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": ["/tmp"],
        "volumes": ["./config:/config:ro"],
        "healthcheck": {
            "test": ["CMD", "python3", "-c", probe],
            "interval": "1s",
            "timeout": "3s",
            "retries": 5,
            "start_period": "30s",
        },
        "stop_grace_period": "35s",
        "restart": "unless-stopped",
        "labels": lb_labels(desired, build),
    }
