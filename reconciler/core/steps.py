"""PURE. What a plan is made of: actions (one per backend, with its reason) and their rollout
steps, in the order the executor carries them out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActionKind(StrEnum):
    CREATE = "create"
    RECREATE = "recreate"  # shown as "replace": a rolling, start-first replacement
    SCALE = "scale"
    START = "start"
    REWEIGHT = "reweight"
    REMOVE = "remove"
    UNCHANGED = "unchanged"


class StepKind(StrEnum):
    CREATE = "create"  # `count` new instances beside the others (batch `batch`)
    START = "start"  # start stopped instances that are current (they form batch `batch`)
    WAIT = "wait"  # until every instance of the batch answers healthy for min_healthy_time
    ROUTE = "route"  # add the batch to the pool; the proxy confirms the generation
    RETIRE = "retire"  # leave the pool, proxy confirms, drain, stop, remove
    SPLIT = "split"  # canary: route `percent` % of the backend's traffic to the batch
    JUDGE = "judge"  # canary: for `interval`, judge the batch on its own answers
    PAUSE = "pause"  # canary: hold the split until `lbrec rollout promote` (or abort)


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    backend: str
    batch: int = 0  # CREATE/START/WAIT/ROUTE: which batch of new instances
    count: int = 0  # CREATE: how many
    percent: int = 0  # SPLIT/JUDGE: the new version's share of the backend's traffic
    container_ids: tuple[str, ...] = ()  # START/WAIT/ROUTE of existing ones, RETIRE
    reason: str = ""

    def describe(self) -> str:
        ids = ", ".join(i[:12] for i in self.container_ids)
        if self.kind is StepKind.CREATE:
            what = f"create {self.count} instance{'s' * (self.count != 1)} (batch {self.batch})"
        elif self.kind is StepKind.START:
            what = f"start {ids} (batch {self.batch})"
        elif self.kind is StepKind.WAIT:
            what = f"wait until batch {self.batch} is healthy"
        elif self.kind is StepKind.ROUTE:
            what = f"route to batch {self.batch}, confirm generation"
        elif self.kind is StepKind.SPLIT:
            what = f"send {self.percent}% of the traffic to batch {self.batch}"
        elif self.kind is StepKind.JUDGE:
            what = f"judge batch {self.batch} at {self.percent}% on its own answers"
        elif self.kind is StepKind.PAUSE:
            what = f"pause at {self.percent}% until `lbrec rollout promote`"
        else:
            what = f"drain and remove {ids}"
        return f"{what}: {self.reason}" if self.reason else what


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
    steps: tuple[Step, ...] = ()  # the rollout, in order (backends only)
    instances_before: int = 0  # running instances now
    instances_after: int = 0  # instances once done (replicas)
    changes: tuple[str, ...] = ()  # every changed attribute, e.g. "weight 2 -> 3"
    new_version: bool = False  # instances of another config run: this rolls out a version

    @property
    def touches_container(self) -> bool:
        if self.role == "backend":
            return any(
                s.kind is not StepKind.ROUTE and s.kind is not StepKind.WAIT for s in self.steps
            )
        return self.kind in (
            ActionKind.CREATE,
            ActionKind.RECREATE,
            ActionKind.START,
            ActionKind.REMOVE,
        ) and not (self.kind is ActionKind.REMOVE and not self.container_ids)

    @property
    def replaced(self) -> tuple[str, ...]:
        """Ids of the instances this action retires."""
        return tuple(i for s in self.steps if s.kind is StepKind.RETIRE for i in s.container_ids)


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
