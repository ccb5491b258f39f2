"""PURE. The plan: what it takes to go from what was observed to what is desired.

``plan(desired, observed, build=...)`` is a pure function: no I/O, no clock. Every action
carries its reason. ``Plan.actions`` are in the order they are shown (removals, reweights,
then new, scaled or replaced backends); the executor's order is engine/apply.py's numbered
phases, and each action's ``steps`` (core/steps.py, made in core/backend_plan.py) are in the
order they are carried out.

A backend's containers are its *instances*. An action that changes instances carries the
ordered rollout ``steps`` that make it, start first and break last: create a batch of at most
``max_parallel`` new instances beside the old ones, wait until they have answered healthy for
``min_healthy_time``, route to them (the proxy confirms the new pool generation), and only then
retire as many old instances: out of the pool, drained, stopped, removed. The executor
(engine/rollout.py) carries the steps out one by one; the order is tested without Docker.
"""

from __future__ import annotations

from dataclasses import replace

from ...proxy.config import BackendsConfig
from .backend_plan import plan_backend, service_needs
from .labels import (
    CONFIG_HASH,
    BuildInfo,
    lb_fields,
    lb_labels,
)
from .spec import DesiredState
from .state import Observed
from .steps import Action, ActionKind, Plan, Step, StepKind

__all__ = ["Action", "ActionKind", "Plan", "Step", "StepKind", "plan", "with_files"]


# The order a plan is shown and carried out in.
_ORDER = {
    ActionKind.REMOVE: 0,
    ActionKind.REWEIGHT: 1,
    ActionKind.START: 2,
    ActionKind.SCALE: 3,
    ActionKind.RECREATE: 4,
    ActionKind.CREATE: 5,
    ActionKind.UNCHANGED: 6,
}


def _pool_weights(pool: BackendsConfig | None) -> dict[str, int]:
    return {} if pool is None else {entry.name: entry.weight for entry in pool.backends}


def _pool_urls(pool: BackendsConfig | None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for entry in pool.backends if pool is not None else ():
        out.setdefault(entry.name, set()).add(entry.url)
    return out


def _settings_diff(current: BackendsConfig | None, target: BackendsConfig) -> tuple[str, ...]:
    if current is None:
        return ()
    skip = {"backends", "generation", "revision", "routes"}
    before = current.model_dump(mode="json", exclude=skip)
    after = target.model_dump(mode="json", exclude=skip)
    out: list[str] = list(_routes_diff(current, target))

    def walk(prefix: str, a: object, b: object) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(f"{prefix}.{key}" if prefix else key, a.get(key), b.get(key))
        elif a != b:
            out.append(f"{prefix} {a} -> {b}")

    walk("", before, after)
    return tuple(out)


def _routes_diff(current: BackendsConfig, target: BackendsConfig) -> list[str]:
    """``route + shop.example.com/api/ -> api``, ``route ~ ...: backends [a] -> [a, b]``,
    ``route - ...``: a route change is a reload of the pool, never a container's restart."""

    def table(config: BackendsConfig) -> dict[str, dict[str, object]]:
        return {
            route.key: route.model_dump(mode="json", exclude={"host", "path"})
            for route in config.routes or ()
        }

    old, new = table(current), table(target)
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(f"route + {key} -> {', '.join(new[key]['backends'])}")  # type: ignore[arg-type]
        elif key not in new:
            out.append(f"route - {key}")
        else:
            for field in sorted(new[key]):
                if old[key].get(field) != new[key][field]:
                    out.append(f"route ~ {key}: {field} {old[key].get(field)} -> {new[key][field]}")
    return out


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
    if verdict := service_needs(containers, want_hash, fields, many="load balancer containers"):
        return act(*verdict)
    return act(ActionKind.UNCHANGED)


def _plan_removals(
    desired: DesiredState, observed: Observed, routed: dict[str, int]
) -> list[Action]:
    """Backends that are not in the file any more, with containers or only in the pool."""
    wanted = {b.name for b in desired.backends}
    orphans: dict[str, list[str]] = {}
    for container in observed.backends:
        if container.backend not in wanted:
            orphans.setdefault(container.backend, []).append(container.id)
    for name in sorted(set(routed) - wanted - set(orphans)):
        orphans[name] = []
    actions = []
    for name in sorted(orphans):
        ids = tuple(orphans[name])
        reason = "not in desired state" if ids else "not in desired state (pool only)"
        steps = (Step(StepKind.RETIRE, name, container_ids=ids, reason=reason),) if ids else ()
        actions.append(
            Action(
                ActionKind.REMOVE,
                backend=name,
                reason=reason,
                weight_before=routed.get(name),
                container_ids=ids,
                steps=steps,
                instances_before=len(ids),
            )
        )
    return actions


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
    urls = _pool_urls(observed.pool)
    actions = [
        plan_backend(
            b,
            containers=observed.for_backend(b.name),
            desired=desired,
            build=build,
            routed=routed,
            routed_urls=urls.get(b.name, set()),
        )
        for b in desired.backends
    ]
    actions += _plan_removals(desired, observed, routed)
    if (lb := _plan_lb(desired, observed, build)) is not None:
        actions.append(lb)
    actions.sort(key=lambda a: (_ORDER[a.kind], a.role == "lb", a.backend))
    return with_files(
        Plan(actions=tuple(actions)), observed, target_pool=target_pool, compose_text=compose_text
    )


def with_files(
    the_plan: Plan,
    observed: Observed,
    *,
    target_pool: BackendsConfig | None,
    compose_text: str | None,
) -> Plan:
    """``the_plan`` with the rendered files compared to what is there: pool-wide setting
    changes and a stale deploy file (the actions do not depend on them, so a pass plans once,
    renders from the plan, then adds this)."""
    settings = _settings_diff(observed.pool, target_pool) if target_pool is not None else ()
    if (
        target_pool is not None
        and not settings
        and all(a.kind is ActionKind.UNCHANGED for a in the_plan.actions)
        and observed.pool_text != target_pool.to_json()
    ):
        settings = ("config/backends.json differs from the desired state: rewrite",)
    compose_changed = compose_text is not None and observed.compose_text != compose_text
    return replace(the_plan, settings_changed=settings, compose_changed=compose_changed)
