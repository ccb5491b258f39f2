"""PURE. One backend's action: its instances grouped by what they need, then the steps that
repair, replace (rolling, start first) or canary them, and the words that say why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .engines.auto import engine_rules
from .labels import (
    CONFIG_HASH,
    BuildInfo,
    canonical_hash,
    changed_fields,
    config_hash,
    container_fields,
)
from .spec import BackendSpec, DesiredState, RolloutSpec
from .state import ObservedContainer
from .steps import Action, ActionKind, Step, StepKind

# `docker start` fails on these ("cannot start a paused container"); a new container is needed.
_NOT_STARTABLE = ("dead", "removing", "paused")


def service_needs(
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


@dataclass
class _Groups:
    """One backend's containers sorted by what they need (routed first, then by name: the
    ones that serve now are the ones kept). Mutable while the steps are worked out."""

    serving: list[ObservedContainer]  # current version, running, healthy, published
    stopped: list[ObservedContainer]  # current version, stopped, can be started again
    stale: list[ObservedContainer]  # running, but old config or unhealthy: to be replaced
    dead: list[ObservedContainer]  # not running and not startable: to be removed
    old_version: list[ObservedContainer]  # running an older config (a canary's baseline)
    new_version: list[ObservedContainer]  # the current config, in any state
    interrupted: list[ObservedContainer] = field(default_factory=list)


def _group(
    containers: tuple[ObservedContainer, ...],
    current: Callable[[ObservedContainer], bool],
    is_routed: Callable[[ObservedContainer], bool],
) -> _Groups:
    ordered = sorted(containers, key=lambda c: (not is_routed(c), c.name, c.id))
    serving = [
        c
        for c in ordered
        if current(c) and c.running and c.health != "unhealthy" and c.url is not None
    ]
    stopped = [c for c in ordered if current(c) and not c.running and c.state not in _NOT_STARTABLE]
    return _Groups(
        serving=serving,
        stopped=stopped,
        stale=[c for c in ordered if c.running and c not in serving],
        dead=[c for c in ordered if not c.running and c not in stopped],
        # The canary decides on versions only: an unhealthy or unpublished instance of the
        # current version is a rolling repair, not a canary.
        old_version=[c for c in ordered if c.running and not current(c)],
        new_version=[c for c in ordered if current(c)],
    )


def _settle_interrupted_canary(
    g: _Groups,
    name: str,
    current: Callable[[ObservedContainer], bool],
    is_routed: Callable[[ObservedContainer], bool],
    steps: list[Step],
) -> bool:
    """Both versions run: a canary was cut short. Returns whether a canary is still to run."""
    old_serving = [c for c in g.old_version if is_routed(c) and c.health != "unhealthy"]
    if any(is_routed(c) for c in g.new_version) and not old_serving:
        # Cut short after its last step (the new version serves everything, the old one was
        # leaving), or the old version no longer serves: finish the promotion; rolling back
        # to nothing would be an outage.
        g.stale = [c for c in g.stale if current(c)]
        retire = tuple(c.id for c in g.old_version)
        reason = "promoted (an interrupted canary's last step)"
        steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason=reason))
        g.old_version = []
        return False
    # Cut short before (lbrec killed, preempted, the host restarted): never promote it
    # unjudged: every instance of the new version goes (the old one takes all traffic back)
    # and the canary starts again from its first step.
    g.interrupted = g.new_version
    g.serving, g.stopped = [], []
    g.stale = list(g.old_version)
    retire = tuple(c.id for c in g.interrupted)
    reason = "an interrupted canary: rolled back, to start again"
    steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason=reason))
    return True


def _canary_steps(name: str, rollout: RolloutSpec, batch: int, wanted: int) -> list[Step]:
    """A new version beside the whole old one, then traffic in steps, each judged."""
    steps = [
        Step(StepKind.CREATE, name, batch=batch, count=wanted),
        Step(StepKind.WAIT, name, batch=batch),
    ]
    share = 0
    for percent in rollout.steps[:-1]:
        if percent == "pause":
            steps.append(Step(StepKind.PAUSE, name, batch=batch, percent=share))
            continue
        share = int(percent)
        steps += [
            Step(StepKind.SPLIT, name, batch=batch, percent=share),
            Step(StepKind.JUDGE, name, batch=batch, percent=share),
        ]
    steps.append(Step(StepKind.SPLIT, name, batch=batch, percent=100))
    return steps


def _whole_version_steps(
    name: str, need: int, old: list[ObservedContainer], batch: int
) -> list[Step]:
    """An engine whose versions come whole (Swarm: one service per version): every new
    instance, waited for and routed, then the old version leaves whole: the engine cannot be
    told which of a version's instances to stop, so no routed one is left to its choice."""
    steps: list[Step] = []
    if need > 0:
        steps += [
            Step(StepKind.CREATE, name, batch=batch, count=need),
            Step(StepKind.WAIT, name, batch=batch),
            Step(StepKind.ROUTE, name, batch=batch),
        ]
    if old:
        retire = tuple(c.id for c in old)
        why = "replaced" if need > 0 else "scaled down"
        steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason=why))
    return steps


def _rolling_steps(
    name: str, need: int, old: list[ObservedContainer], batch: int, batch_size: int
) -> list[Step]:
    """Create, wait, route, then retire one old instance for each new one, in batches of
    ``max_parallel`` only while old instances are to be replaced one for one (new capacity
    beside nothing to retire comes at once); fewer replicas: the rest leave at the end."""
    steps: list[Step] = []
    while need > 0:
        count = min(batch_size, need) if old else need
        steps += [
            Step(StepKind.CREATE, name, batch=batch, count=count),
            Step(StepKind.WAIT, name, batch=batch),
            Step(StepKind.ROUTE, name, batch=batch),
        ]
        if old[:count]:
            retire = tuple(c.id for c in old[:count])
            steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason="replaced"))
            old = old[count:]
        need -= count
        batch += 1
    if old:  # one pool change, one drain
        retire = tuple(c.id for c in old)
        steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason="scaled down"))
    return steps


@dataclass(frozen=True, slots=True)
class _Repair:
    steps: list[Step]
    batch: int  # the next batch number
    unrouted: list[ObservedContainer]  # serving, healthy, not in the pool: routed again
    starts: list[ObservedContainer]  # stopped instances of the current version: started again
    leftover: list[ObservedContainer]  # stopped instances beyond the replicas: removed


def _repair_steps(
    name: str,
    g: _Groups,
    keep: list[ObservedContainer],
    wanted: int,
    is_routed: Callable[[ObservedContainer], bool],
) -> _Repair:
    """What the current version needs without a new instance: route the ones that serve but
    are out of the pool, start stopped ones, remove stopped extras."""
    steps: list[Step] = []
    batch = 0
    unrouted = [c for c in keep if not is_routed(c)]
    if unrouted:
        ids = tuple(c.id for c in unrouted)
        steps += [
            Step(StepKind.WAIT, name, batch=batch, container_ids=ids),
            Step(StepKind.ROUTE, name, batch=batch, container_ids=ids, reason="not routed"),
        ]
        batch += 1
    starts = g.stopped[: wanted - len(keep)]
    if starts:
        ids = tuple(c.id for c in starts)
        steps += [
            Step(StepKind.START, name, batch=batch, container_ids=ids),
            Step(StepKind.WAIT, name, batch=batch, container_ids=ids),
            Step(StepKind.ROUTE, name, batch=batch, container_ids=ids),
        ]
        batch += 1
    leftover = g.stopped[len(starts) :]
    if leftover:
        ids = tuple(c.id for c in leftover)
        steps.append(Step(StepKind.RETIRE, name, container_ids=ids, reason="stopped extra"))
    return _Repair(steps, batch, unrouted, starts, leftover)


def plan_backend(
    backend: BackendSpec,
    *,
    containers: tuple[ObservedContainer, ...],
    desired: DesiredState,
    build: BuildInfo,
    routed: dict[str, int],
    routed_urls: set[str],
) -> Action:
    fields = container_fields(backend, desired, build)
    want_hash = config_hash(backend, desired, build)
    wanted = backend.replicas
    name = backend.name
    rollout = backend.rollout_of(desired)

    def current(c: ObservedContainer) -> bool:
        return c.labels.get(CONFIG_HASH) == want_hash

    def is_routed(c: ObservedContainer) -> bool:
        return c.url is not None and c.url in routed_urls

    g = _group(containers, current, is_routed)
    steps: list[Step] = []
    canary = rollout.strategy == "canary" and bool(g.old_version)
    if canary and g.new_version:
        canary = _settle_interrupted_canary(g, name, current, is_routed, steps)
    g.dead = [c for c in g.dead if c not in g.interrupted]
    if g.dead:
        why = ", ".join(sorted({f"container {c.state}" for c in g.dead}))
        retire = tuple(c.id for c in g.dead)
        steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason=why))
    keep, excess = g.serving[:wanted], g.serving[wanted:]
    repair = _repair_steps(name, g, keep, wanted, is_routed)
    steps += repair.steps
    batch, starts = repair.batch, repair.starts
    old = g.stale + excess  # retired one for one as new ones serve, the rest at the end
    if canary and not g.serving and not g.stopped:
        steps += _canary_steps(name, rollout, batch, wanted)
        retire = tuple(c.id for c in old)
        steps.append(Step(StepKind.RETIRE, name, container_ids=retire, reason="promoted"))
    else:
        need = wanted - len(keep) - len(starts)
        if engine_rules(desired.engine).whole_versions:
            steps += _whole_version_steps(name, need, old, batch)
        else:
            steps += _rolling_steps(name, need, old, batch, rollout.max_parallel)
    kind, reason, changes = _describe(
        backend,
        g,
        containers=containers,
        fields=fields,
        current=current,
        before=routed.get(name),
        steps=steps,
        repair=repair,
    )
    if any(s.kind is StepKind.JUDGE for s in steps):
        reason += "; canary " + " -> ".join(f"{p}%" for p in rollout.steps)
    return Action(
        kind,
        backend=name,
        reason=reason,
        port=backend.port,
        weight_before=routed.get(name),
        weight_after=backend.weight,
        container_ids=tuple(c.id for c in containers),
        steps=tuple(steps),
        instances_before=len(g.serving) + len(g.stale),
        instances_after=wanted,
        changes=tuple(changes),
        new_version=bool(g.old_version) or bool(g.interrupted),
    )


def _replaced_because(
    g: _Groups, fields: dict[str, str], current: Callable[[ObservedContainer], bool]
) -> list[str]:
    """Why instances go: the fields that changed, or the state they are in; each reason once."""
    changes: list[str] = []
    want_hash = canonical_hash(fields)[:16]  # as config_hash(): no tracked field named it
    for c in g.stale + g.dead:
        if current(c) and c.running and c.url is None:
            changes.append("container publishes no port")
        elif current(c):
            changes.append(f"container {c.health if c.running else c.state}")
        else:
            changes.extend(
                changed_fields(c.labels, fields)
                or [f"config hash {c.labels.get(CONFIG_HASH) or '(unset)'} -> {want_hash}"]
            )
    if g.interrupted:
        changes.insert(0, "an interrupted canary is rolled back and started again")
    return list(dict.fromkeys(changes))


def _describe(
    backend: BackendSpec,
    g: _Groups,
    *,
    containers: tuple[ObservedContainer, ...],
    fields: dict[str, str],
    current: Callable[[ObservedContainer], bool],
    before: int | None,
    steps: list[Step],
    repair: _Repair,
) -> tuple[ActionKind, str, list[str]]:
    """What the plan says about a backend, and why: its kind, reason and list of changes."""
    starts, leftover, unrouted = repair.starts, repair.leftover, repair.unrouted
    changes = _replaced_because(g, fields, current)
    wanted = backend.replicas
    counted = len(g.serving) + len(g.stale) + len(g.stopped)
    if containers and counted != wanted:
        changes.append(f"replicas {counted} -> {wanted}")
    if before is not None and before != backend.weight:
        changes.append(f"weight {before} -> {backend.weight}")
    if not containers:
        return ActionKind.CREATE, "no container", changes
    if g.stale or (g.dead and not g.serving and not g.stopped):
        kind = ActionKind.RECREATE
    elif counted != wanted or leftover or g.dead:
        kind = ActionKind.SCALE
    elif starts:
        kind = ActionKind.START
        changes.insert(0, ", ".join(sorted({f"container {c.state}" for c in starts})))
    elif unrouted or before != backend.weight:
        kind = ActionKind.REWEIGHT
        if before is None or unrouted:
            changes.insert(0, "not routed")
    else:
        kind = ActionKind.UNCHANGED
    if kind is ActionKind.UNCHANGED and steps:  # only leftovers to finish (a cut-short canary)
        kind = ActionKind.RECREATE
        changes.insert(0, steps[0].reason)
    return kind, ", ".join(changes), changes
