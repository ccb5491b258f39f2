"""Each backend's rollout steps carried out: batches, canary splits, judgements, rollbacks."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import assert_never

from ..core.errors import ApplyError, LbrecError
from ..core.labels import config_hash
from ..core.plan import Action, Step, StepKind
from ..core.report import Outcome
from ..core.spec import BackendSpec
from .canary_steps import (
    canary_state,
    given_up,
    hold_canary_step,
    pause_step,
    roll_back,
    roll_back_canary,
)
from .hooks import Preempted
from .run import Run

_CANARY = (StepKind.SPLIT, StepKind.JUDGE, StepKind.PAUSE)


def roll_all(run: Run, actions: Sequence[Action], *, parallel: bool) -> dict[str, Outcome]:
    """Each backend's steps; backends side by side (a thread each, at most 8) when
    ``parallel``: a backend's ``max_parallel`` bounds its own batches, not the others'. A newer
    change that waits ends every rollout at its next wait: what is half done is undone, the
    rest is left to the next pass."""
    out: dict[str, Outcome] = {}

    def one(action: Action) -> Outcome:
        canary = any(s.kind is StepKind.JUDGE or s.kind is StepKind.PAUSE for s in action.steps)
        if canary:
            run.workspace.rollouts.take_request(action.backend)  # a stale request: not ours
        try:
            outcome = _roll(run, action)
            _remember(run, outcome)
            return outcome
        except (LbrecError, OSError) as err:
            message = err.message if isinstance(err, LbrecError) else f"{type(err).__name__}: {err}"
            return Outcome(action, ok=False, error=f"{action.backend}: {message}")
        except Preempted as err:
            why = f"preempted ({err.reason}); the next pass carries on"
            return given_up(run, action, why, then="its old instances keep serving", preempted=True)
        finally:
            if canary:
                run.workspace.rollouts.write_state(action.backend, None)
                run.workspace.rollouts.take_request(action.backend)

    if parallel and len(actions) > 1:
        with ThreadPoolExecutor(
            max_workers=min(8, len(actions)), thread_name_prefix="lbrec-roll"
        ) as pool:
            for action, outcome in zip(actions, pool.map(one, actions), strict=True):
                out[action.backend] = outcome
        return out
    stopped: str | None = None
    for action in actions:
        if stopped is not None:
            out[action.backend] = Outcome(
                action, ok=False, error=f"not started: {stopped}", preempted=True
            )
            continue
        out[action.backend] = one(action)
        if out[action.backend].preempted:
            stopped = "preempted: a newer change waits"
    return out


def _remember(run: Run, outcome: Outcome) -> None:
    """A rolled-back version is remembered (loops hold it until it changes); a backend that
    converged is forgotten."""
    name = outcome.action.backend
    spec = run.desired.backend(name)
    desk = run.workspace.rollouts
    if outcome.ok:
        desk.forget_rollback(name)
    elif outcome.rolled_back and spec is not None and run.build is not None:
        version = config_hash(spec, run.desired, run.build)
        desk.remember_rollback(name, version, outcome.error or "rolled back")


def _roll(run: Run, action: Action) -> Outcome:
    """Carry out one backend's steps; a batch that fails is removed and the rest skipped."""
    try:
        return _Rollout(run, action).carry_out()
    except ApplyError as err:
        return Outcome(action, ok=False, error=err.message, detail=err.detail)


class _Rollout:
    """One backend's steps, one method per step kind; a method returns an Outcome to end the
    rollout there (a rollback), None to go on."""

    def __init__(self, run: Run, action: Action) -> None:
        self.run = run
        self.action = action
        self.name = action.backend
        spec = run.desired.backend(action.backend)
        self.rollout = spec.rollout_of(run.desired) if spec is not None else run.desired.rollout
        self._spec = spec
        self.batches: dict[int, tuple[str, ...]] = {}
        self.created: set[int] = set()  # batches this pass made (a failure removes them)
        self.restarted: set[int] = set()  # batches of current instances started again

    @property
    def spec(self) -> BackendSpec:
        assert self._spec is not None, f"{self.name}: steps that need the backend's spec"
        return self._spec

    def ids(self, step: Step) -> tuple[str, ...]:
        return self.batches.get(step.batch, step.container_ids)

    def carry_out(self) -> Outcome:
        for step in self.action.steps:
            if step.kind in _CANARY and self.run.promoted(self.name) and step.percent < 100:
                continue  # promoted in full: straight to 100 %
            outcome = self.do(step)
            if outcome is not None:
                return outcome
        return Outcome(self.action, ok=True)

    def do(self, step: Step) -> Outcome | None:
        """One step, by its kind: a new kind that is not handled here fails in mypy."""
        match step.kind:
            case StepKind.RETIRE:
                self.retire(step)
            case StepKind.CREATE:
                self.create(step)
            case StepKind.START:
                self.start(step)
            case StepKind.WAIT:
                return self.wait(step)
            case StepKind.ROUTE:
                self.route(step)
            case StepKind.SPLIT:
                self.split(step)
            case StepKind.JUDGE:
                return self.check_canary(step)
            case StepKind.PAUSE:
                return self.pause(step)
            case _:
                assert_never(step.kind)
        return None

    def retire(self, step: Step) -> None:
        run, name = self.run, self.name
        run.retire(name, step.container_ids, self.rollout.drain_timeout)
        if run.end_split(name, promoted=True):  # one version left
            run.workspace.rollouts.write_state(name, None)
        run.say(f"{name}: removed {', '.join(i[:12] for i in step.container_ids)}")

    def create(self, step: Step) -> None:
        self.batches[step.batch] = _create(self.run, self.name, step)
        self.created.add(step.batch)
        self.run.say(f"{self.name}: started {step.count} new instance(s), waiting for health")

    def start(self, step: Step) -> None:
        self.run.docker.start(step.container_ids)
        self.batches[step.batch] = step.container_ids
        self.restarted.add(step.batch)

    def wait(self, step: Step) -> Outcome | None:
        ids = self.ids(step)
        try:
            problem = self.run.wait_ready(
                self.spec,
                ids,
                # min_healthy_time proves a new version; an instance of the version already
                # serving, started again (stopped by hand, or while the engine was away), is
                # routed on its first healthy answer: the proxy's health checks watch it.
                min_healthy=0.0 if step.batch in self.restarted else self.rollout.min_healthy_time,
                deadline=self.rollout.healthy_deadline,
            )
        except Preempted:
            if step.batch in self.created:
                self.run.docker.discard(ids)  # created by this pass: not half left
            raise
        if problem is None:
            return None
        return roll_back(self.run, self.action, ids, problem, created=step.batch in self.created)

    def route(self, step: Step) -> None:
        ids = self.ids(step)
        self.run.route(self.name, ids)
        where = ", ".join(self.run.container(i).endpoint or i for i in ids)
        self.run.say(f"{self.name}: routed to {where}")

    def split(self, step: Step) -> None:
        run, name = self.run, self.name
        ids = self.ids(step)
        run.split(name, ids, step.percent)
        run.say(f"{name}: {step.percent}% of the traffic on the new version")
        if step.percent < 100:
            canary_state(run, self.action, step, "judging")
        else:  # judged: what is left is the old version's drain
            run.workspace.rollouts.write_state(name, None)

    def check_canary(self, step: Step) -> Outcome | None:
        ids = self.ids(step)
        problem = hold_canary_step(self.run, self.spec, ids, step.percent)
        return None if problem is None else roll_back_canary(self.run, self.action, ids, problem)

    def pause(self, step: Step) -> Outcome | None:
        ids = self.ids(step)
        canary_state(self.run, self.action, step, "paused")
        self.run.say(f"{self.name}: paused at {step.percent}%: `lbrec rollout promote {self.name}`")
        problem = pause_step(self.run, self.name)
        return None if problem is None else roll_back_canary(self.run, self.action, ids, problem)


def _create(run: Run, name: str, step: Step) -> tuple[str, ...]:
    """Scale the service up by ``step.count`` beside what exists; the new containers' ids."""
    return run.scale_up({name: step.count})[name]


def create_together(run: Run, actions: Sequence[Action]) -> dict[str, Outcome]:
    """First deploy of several backends: create all, wait for all at once, route the healthy
    ones in one pool change; a failed one is removed and named."""
    counts = {a.backend: a.steps[0].count for a in actions}
    by_name = {a.backend: a for a in actions}
    try:
        created = run.scale_up(counts)
    except ApplyError as err:
        return {
            a.backend: Outcome(a, ok=False, error=err.message, detail=err.detail) for a in actions
        }
    run.say(f"started {', '.join(counts)}; waiting for health")
    groups = {}
    for name, ids in created.items():
        spec = run.desired.backend(name)
        assert spec is not None
        rollout = spec.rollout_of(run.desired)
        groups[name] = (spec, ids, rollout.min_healthy_time, rollout.healthy_deadline)
    try:
        problems = run.wait_many(groups)
    except Preempted:
        run.docker.discard([i for ids in created.values() for i in ids])
        raise
    out: dict[str, Outcome] = {}
    for name, problem in problems.items():
        if problem is None:
            run.route(name, created[name], publish=False)  # one pool change for all
            out[name] = Outcome(by_name[name], ok=True)
        else:
            run.docker.discard(created[name])
            out[name] = Outcome(by_name[name], ok=False, error=f"{name}: {problem}")
    run.publish()
    run.say(f"routed to {', '.join(n for n, p in problems.items() if p is None) or 'none'}")
    return out
