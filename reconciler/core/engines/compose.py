"""PURE. engine: compose: the instances are containers of one Compose project on one Docker
engine, deployed from docker-compose.yml (its adapter: adapters/engines/compose.py).

A backend is one Compose service whose instances Compose scales up beside the old ones, so a
rollout replaces them in batches of ``max_parallel``; the load balancer itself may be a
service of the project (proxy.mode: container).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..labels import BuildInfo, lb_labels, lb_user, low_port
from ..render import LB_SERVICE, PROXY_DOCKERFILE, backend_service, dump_document, literal
from ..spec import BackendSpec, DesiredState

__all__ = ["RULES", "lb_service", "render_compose_file"]


class _Compose:
    name = "compose"
    whole_versions = False

    def version_fields(self, desired: DesiredState, backend: BackendSpec) -> dict[str, str]:
        del desired, backend
        return {}  # the hashes of compose stay what they always were

    def image_reference(self, desired: DesiredState, tag: str) -> str:
        del desired
        return tag  # built on this engine, run on it

    def refusal(self, desired: DesiredState) -> str | None:
        del desired
        return None

    def deploy_file(
        self,
        desired: DesiredState,
        build: BuildInfo,
        *,
        source: str = "desired-state.yaml",
        revisions: Mapping[str, str] | None = None,
    ) -> str:
        return render_compose_file(desired, build, source=source, revisions=revisions)


RULES = _Compose()


def render_compose_file(
    desired: DesiredState,
    build: BuildInfo,
    *,
    source: str = "desired-state.yaml",
    revisions: Mapping[str, str] | None = None,
) -> str:
    """The whole docker-compose.yml. ``revisions`` maps backend -> deployed git commit."""
    revisions = revisions or {}
    services = {
        backend.name: backend_service(desired, backend, build, revisions.get(backend.name))
        for backend in desired.backends
    }
    if desired.proxy.mode == "container":
        services[LB_SERVICE] = lb_service(desired, build)
    document: dict[str, object] = {"name": desired.project, "services": literal(services)}
    return dump_document(document, source)


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
