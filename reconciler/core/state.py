"""PURE. What was observed: plain frozen values, no Docker library types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ...proxy.config import BackendsConfig
from .certs import HeldCertificate

__all__ = ["Observed", "ObservedContainer"]


@dataclass(frozen=True, slots=True)
class ObservedContainer:
    id: str
    backend: str
    state: str  # running, exited, created, restarting, paused, dead
    health: str | None  # healthy, unhealthy, starting, or None without a healthcheck
    labels: Mapping[str, str] = field(default_factory=dict)
    image: str = ""
    started_at: str | None = None
    name: str = ""
    role: str = "backend"  # or "lb": the load balancer's own container (proxy.mode container)
    # Where the host reaches it: HOST:PORT that Docker published for the backend's port
    # (read from the container, never guessed); None when not published (stopped).
    endpoint: str | None = None

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    @property
    def url(self) -> str | None:
        return None if self.endpoint is None else f"http://{self.endpoint}"

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True, slots=True)
class Observed:
    containers: tuple[ObservedContainer, ...] = ()
    pool: BackendsConfig | None = None  # the current config/backends.json, when readable
    pool_text: str | None = None
    compose_text: str | None = None
    # The certificates lbrec obtained over ACME (.lbrec/certs), for the pool's tls.certificates
    certificates: tuple[HeldCertificate, ...] = ()
    _by_backend: dict[str, tuple[ObservedContainer, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # One pass over the containers, so planning N backends stays linear.
        index: dict[str, list[ObservedContainer]] = {}
        for container in self.containers:
            if container.role == "backend":
                index.setdefault(container.backend, []).append(container)
        object.__setattr__(self, "_by_backend", {k: tuple(v) for k, v in index.items()})

    def for_backend(self, name: str) -> tuple[ObservedContainer, ...]:
        return self._by_backend.get(name, ())

    @property
    def backends(self) -> tuple[ObservedContainer, ...]:
        return tuple(c for c in self.containers if c.role == "backend")

    @property
    def lb(self) -> tuple[ObservedContainer, ...]:
        return tuple(c for c in self.containers if c.role == "lb")
