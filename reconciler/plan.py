"""PURE. The plan: what it takes to go from what was observed to what is desired.

``plan(desired, observed, build=...)`` is a pure function: no I/O, no clock. Every action
carries its reason, and the order of ``Plan.actions`` is the safe order to carry them out in
(removals first, then reweights, then new or replaced containers).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from proxy.config import BackendsConfig

from .labels import (
    CONFIG_HASH,
    BuildInfo,
    backend_labels,
    changed_fields,
    container_fields,
    lb_fields,
    lb_labels,
)
from .spec import BackendSpec, DesiredState
from .state import Observed, ObservedContainer

__all__ = ["Action", "ActionKind", "Plan", "plan"]


class ActionKind(StrEnum):
    CREATE = "create"
    RECREATE = "recreate"
    START = "start"
    REWEIGHT = "reweight"
    REMOVE = "remove"
    UNCHANGED = "unchanged"


# The order a plan is shown and carried out in.
_ORDER = {
    ActionKind.REMOVE: 0,
    ActionKind.REWEIGHT: 1,
    ActionKind.START: 2,
    ActionKind.RECREATE: 3,
    ActionKind.CREATE: 4,
    ActionKind.UNCHANGED: 5,
}

# `docker start` fails on these ("cannot start a paused container"); a new container is needed.
_NOT_STARTABLE = ("dead", "removing", "paused")


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    backend: str
    reason: str = ""
    port: int | None = None
    weight_before: int | None = None  # as routed in backends.json now (None: not routed)
    weight_after: int | None = None
    container_ids: tuple[str, ...] = ()  # existing containers this action acts on
    role: str = "backend"  # or "lb": the load balancer's own container

    @property
    def touches_container(self) -> bool:
        return self.kind in (
            ActionKind.CREATE,
            ActionKind.RECREATE,
            ActionKind.START,
            ActionKind.REMOVE,
        ) and not (self.kind is ActionKind.REMOVE and not self.container_ids)


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    # Pool-wide settings that differ in backends.json (health, timeouts, listen...).
    settings_changed: tuple[str, ...] = ()
    compose_changed: bool = False

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind is not ActionKind.UNCHANGED)

    @property
    def in_sync(self) -> bool:
        return not self.changes and not self.settings_changed and not self.compose_changed

    def of(self, *kinds: ActionKind) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.kind in kinds)


def _pool_weights(pool: BackendsConfig | None) -> dict[str, int]:
    return {} if pool is None else {entry.name: entry.weight for entry in pool.backends}


def _settings_diff(current: BackendsConfig | None, target: BackendsConfig) -> tuple[str, ...]:
    if current is None:
        return ()
    before = current.model_dump(mode="json", exclude={"backends", "generation", "revision"})
    after = target.model_dump(mode="json", exclude={"backends", "generation", "revision"})
    out: list[str] = []

    def walk(prefix: str, a: object, b: object) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(f"{prefix}.{key}" if prefix else key, a.get(key), b.get(key))
        elif a != b:
            out.append(f"{prefix} {a} -> {b}")

    walk("", before, after)
    return tuple(out)


def _judge(
    containers: tuple[ObservedContainer, ...],
    want_hash: str,
    fields: dict[str, str],
    *,
    many: str,
) -> tuple[ActionKind, str] | None:
    """What the containers of one service need (create, recreate, start), or None if fine."""
    if not containers:
        return ActionKind.CREATE, "no container"
    if len(containers) > 1:
        return ActionKind.RECREATE, f"{len(containers)} {many}"
    container = containers[0]
    if container.labels.get(CONFIG_HASH) != want_hash:
        reasons = changed_fields(container.labels, fields) or ["config hash changed"]
        return ActionKind.RECREATE, ", ".join(reasons)
    if container.state in _NOT_STARTABLE:
        return ActionKind.RECREATE, f"container {container.state}"
    if not container.running:
        return ActionKind.START, f"container {container.state}"
    if container.health == "unhealthy":
        return ActionKind.RECREATE, "container unhealthy"
    return None


def _plan_backend(
    backend: BackendSpec,
    containers: tuple[ObservedContainer, ...],
    desired: DesiredState,
    build: BuildInfo,
    routed: dict[str, int],
) -> Action:
    fields = container_fields(backend, desired, build)
    want_hash = backend_labels(backend, desired, build)[CONFIG_HASH]
    before = routed.get(backend.name)
    ids = tuple(c.id for c in containers)

    def act(kind: ActionKind, reason: str = "") -> Action:
        return Action(
            kind,
            backend=backend.name,
            reason=reason,
            port=backend.port,
            weight_before=before,
            weight_after=backend.weight,
            container_ids=ids,
        )

    if verdict := _judge(containers, want_hash, fields, many="containers for one backend"):
        return act(*verdict)
    if before != backend.weight:
        return act(
            ActionKind.REWEIGHT,
            "not routed" if before is None else f"weight {before} -> {backend.weight}",
        )
    return act(ActionKind.UNCHANGED)


def _plan_lb(desired: DesiredState, observed: Observed, build: BuildInfo) -> Action | None:
    """The load balancer's container: wanted only when proxy.mode is container."""
    containers = observed.lb
    ids = tuple(c.id for c in containers)

    def act(kind: ActionKind, reason: str = "") -> Action:
        return Action(kind, backend="lb", reason=reason, container_ids=ids, role="lb")

    if desired.proxy.mode != "container":
        return act(ActionKind.REMOVE, "proxy.mode is host") if containers else None
    want_hash = lb_labels(desired, build)[CONFIG_HASH]
    fields = lb_fields(desired, build)
    if verdict := _judge(containers, want_hash, fields, many="load balancer containers"):
        return act(*verdict)
    return act(ActionKind.UNCHANGED)


def plan(
    desired: DesiredState,
    observed: Observed,
    *,
    build: BuildInfo,
    target_pool: BackendsConfig | None = None,
    compose_text: str | None = None,
) -> Plan:
    """Actions that make ``observed`` match ``desired``.

    ``target_pool`` and ``compose_text`` are the rendered files (see render.py); when given,
    pool-wide setting changes and a stale docker-compose.yml are reported too.
    """
    routed = _pool_weights(observed.pool)
    actions = [
        _plan_backend(b, observed.for_backend(b.name), desired, build, routed)
        for b in desired.backends
    ]
    wanted = {b.name for b in desired.backends}
    orphans: dict[str, list[str]] = {}
    for container in observed.backends:
        if container.backend not in wanted:
            orphans.setdefault(container.backend, []).append(container.id)
    for name in sorted(set(routed) - wanted - set(orphans)):
        orphans[name] = []
    for name in sorted(orphans):
        ids = tuple(orphans[name])
        reason = "not in desired state" if ids else "not in desired state (pool only)"
        actions.append(
            Action(
                ActionKind.REMOVE,
                backend=name,
                reason=reason,
                weight_before=routed.get(name),
                container_ids=ids,
            )
        )
    if (lb := _plan_lb(desired, observed, build)) is not None:
        actions.append(lb)
    actions.sort(key=lambda a: (_ORDER[a.kind], a.role == "lb", a.backend))
    settings = _settings_diff(observed.pool, target_pool) if target_pool is not None else ()
    if (
        target_pool is not None
        and not settings
        and all(a.kind is ActionKind.UNCHANGED for a in actions)
        and observed.pool_text != target_pool.to_json()
    ):
        settings = ("config/backends.json differs from the desired state: rewrite",)
    compose_changed = compose_text is not None and observed.compose_text != compose_text
    return Plan(
        actions=tuple(actions),
        settings_changed=settings,
        compose_changed=compose_changed,
    )
