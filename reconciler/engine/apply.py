"""Orchestration: carry out a plan, make before break, and report what happened.

Order: pull or build every image a new instance needs (a failure changes nothing of that
backend); write docker-compose.yml; route away from backends that go and apply new weights
(the proxy confirms the generation); drain and remove what goes; then carry out each backend's
rollout steps (plan.py) one by one: create a batch beside the old instances, wait until it has
answered healthy for ``min_healthy_time``, route to it, and only then retire old instances
(out of the pool, confirmed, drained up to ``drain_timeout``, stopped with their grace period,
removed). A batch that is not healthy within ``healthy_deadline`` is removed and the rest of
that backend's rollout is skipped: its old instances were never touched and keep serving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

from ...proxy.config import Revision
from ..core.errors import ApplyError
from ..core.labels import REVISION, BuildInfo
from ..core.plan import Action, ActionKind, Plan, StepKind
from ..core.ports import DockerPort, Progress, WorkspacePort
from ..core.report import Outcome, Report
from ..core.spec import DesiredState
from ..core.state import Observed
from .hooks import Hooks, Preempted
from .images import collect_images, ensure_images
from .repairs import remember_converged, start_repairs
from .rollout import create_together, roll_all
from .run import Run


def apply(
    desired: DesiredState,
    observed: Observed,
    the_plan: Plan,
    *,
    deploy_file: str,
    workspace: WorkspacePort,
    docker: DockerPort,
    build: BuildInfo,
    hooks: Hooks,
    revision: Revision | None = None,
    progress: Progress | None = None,
    health_timeout: float = 60.0,
    only: Collection[str] | None = None,
    held: Mapping[str, str] | None = None,
    epoch: int | None = None,
    crash_loops: bool = False,
) -> Report:
    """Carry out ``the_plan`` (see the module docstring for the order); ``deploy_file`` is the
    Compose (or stack) file rendered from it (engine/converge.py). With ``only``, the
    container work of other backends is deferred (reported, not done); so is that of the
    ``held`` backends (a version that was rolled back, with why); the pool still takes every
    new weight. With ``crash_loops`` (the loops), a backend repaired again and again gets a
    back-off and then a hold (engine/repairs.py); without, its history is forgotten.

    Longer than most on purpose: the numbered phases below are the safe order of a pass, and
    reading them in one place is the point; each phase is a call or a few lines."""
    say = progress or (lambda _msg: None)
    run = Run(
        desired,
        workspace,
        docker,
        hooks,
        say=say,
        revision=revision,
        build=build,
        epoch=epoch,
        certificates=observed.certificates,  # obtained over ACME: the pool's tls.certificates
    )
    backends = [a for a in the_plan.actions if a.role == "backend"]
    outcomes: dict[str, Outcome] = _deferred(backends, held, only)
    # What only brings back the version that already converged is a repair, not a deploy;
    # the loops give repeated restarts a back-off, then hold a crash loop (engine/repairs.py).
    records = hooks.records
    repairs, restarts = start_repairs(
        records, desired, build, backends, outcomes,
        now=hooks.wall(), epoch=epoch, crash_loops=crash_loops,
    )  # fmt: skip
    backends = [a for a in backends if a.backend not in outcomes]

    run.wrote(workspace.write_deploy_file(deploy_file))

    # 0. Images before any container: a pull or build that fails changes nothing of its backend.
    broken = ensure_images(
        desired, backends, docker=docker, build=build, say=say, progress=progress
    )
    for name, err in broken.items():
        action = next(a for a in backends if a.backend == name)
        outcomes[name] = Outcome(action, ok=False, error=err.message, detail=err.detail)

    # 1. The pool routes what serves now, at the desired weights; a held backend's old
    # version serves wherever its instances listen now.
    _route_what_serves(run, desired, observed)
    _route_held(run, desired, observed, [a for a in the_plan.actions if a.backend in (held or {})])
    for action in backends:
        if action.kind is ActionKind.REWEIGHT and not action.steps:
            outcomes[action.backend] = Outcome(action, ok=True)

    # 2a. Backends that have no instance at all come up together.
    outcomes.update(_create_fresh(run, [a for a in backends if a.backend not in outcomes]))

    # 2. Each backend's steps, in plan order (removals first). A newer change that waits
    # ends the pass here: what is half done was undone, the rest is left to the next pass.
    todo = [a for a in backends if a.backend not in outcomes and a.steps]
    removals = [a for a in todo if a.kind is ActionKind.REMOVE]
    rollouts = [a for a in todo if a.kind is not ActionKind.REMOVE]
    for group in (removals, rollouts):
        outcomes.update(roll_all(run, group, parallel=hooks.parallel))

    # 3. The pool once more (unchanged unless a step was skipped).
    generation = run.write_pool()

    # 4. The load balancer's own container (proxy.mode: container) reads that pool at start.
    for action in the_plan.actions:
        if action.role == "lb" and action.kind is not ActionKind.UNCHANGED:
            outcomes["lb"] = converge_lb(action, docker, say, progress, health_timeout)

    # 5. Images lbrec built and nothing runs any more: keep the previous one per repository
    # (a fast rollback), remove the rest. Only after a pass where everything went well.
    if all(o.ok for o in outcomes.values()) and any(a.steps for a in backends):
        collect_images(docker, say)
    for name in repairs & {a.backend for a in backends}:
        if name in outcomes and outcomes[name].ok:
            outcomes[name] = dataclasses.replace(outcomes[name], repaired=True)
    if records is not None:
        remember_converged(records, desired, build, the_plan.actions, outcomes)
    ordered = tuple(outcomes[a.backend] for a in the_plan.changes if a.backend in outcomes)
    return Report(
        plan=the_plan,
        check=False,
        outcomes=ordered,
        files_written=tuple(run.written),
        routed=run.routed_backends(),
        generation=generation,
        retry_in=None if restarts is None else restarts.retry_in,
    )


def _deferred(
    backends: Sequence[Action], held: Mapping[str, str] | None, only: Collection[str] | None
) -> dict[str, Outcome]:
    """The backends whose container work this pass leaves alone: a held (rolled-back) new
    version, and, for an edit that cut another pass short, every backend it did not edit."""
    outcomes: dict[str, Outcome] = {}
    for action in backends:
        if not action.steps:
            continue
        if held and action.backend in held and action.new_version:
            outcomes[action.backend] = Outcome(
                action, ok=True, deferred=True, detail=held[action.backend]
            )
        elif only is not None and action.backend not in only:
            outcomes[action.backend] = Outcome(
                action,
                ok=True,
                deferred=True,
                detail="this edit cut another pass short; run `lbrec apply` for the rest",
            )
    return outcomes


def _route_what_serves(run: Run, desired: DesiredState, observed: Observed) -> None:
    """Step 1: the pool routes what serves now (matched by URL), at the desired weights, and a
    canary in progress (a pass cut short) keeps its split until this pass decides; backends
    that go leave the pool before their containers do."""
    # Matched by container id (at the port just read: the same instance wherever it listens
    # now; a frozen entry comes back only this way), or by URL for an entry without an id.
    pool_urls: dict[str, set[str]] = {}
    pool_ids: dict[str, set[str]] = {}
    for entry in observed.pool.backends if observed.pool is not None else ():
        if entry.container is not None:
            pool_ids.setdefault(entry.name, set()).add(entry.container)
        elif entry.frozen is None:
            pool_urls.setdefault(entry.name, set()).add(entry.url)
    for spec in desired.backends:
        by_id, by_url = pool_ids.get(spec.name, set()), pool_urls.get(spec.name, set())
        run.adopt(
            spec.name,
            (
                c
                for c in observed.for_backend(spec.name)
                if c.running and c.url is not None and (c.id in by_id or c.url in by_url)
            ),
        )
    run.know(observed.containers)
    canary: dict[str, tuple[set[str], int]] = {}
    for entry in observed.pool.backends if observed.pool is not None else ():
        if entry.version == "canary" and entry.percent is not None:
            canary.setdefault(entry.name, (set(), entry.percent))[0].add(
                entry.container or entry.url
            )
    for name, (urls, percent) in canary.items():
        ids = [i for i, url in run.routed(name).items() if url in urls or i in urls]
        if ids:
            run.split(name, ids, percent, publish=False)
    run.publish()


def _route_held(
    run: Run, desired: DesiredState, observed: Observed, actions: Sequence[Action]
) -> None:
    """Step 1b: held (its new version was rolled back) means its old instances keep serving,
    wherever they listen now: a held backend with nothing routed (its instances came back on
    other ports from a pool that named no ids) routes its running old-version instances once
    they answer healthy."""
    for action in actions:
        spec = desired.backend(action.backend)
        if spec is None or not action.new_version or run.routed(action.backend):
            continue
        current = set(action.replaced)  # what the rollout would retire: the old version
        ids = [
            c.id
            for c in observed.for_backend(action.backend)
            if c.id in current and c.running and c.url is not None and c.health != "unhealthy"
        ][: spec.replicas]
        if not ids:
            continue
        rollout = spec.rollout_of(desired)
        try:
            problem = run.wait_ready(spec, ids, min_healthy=0.0, deadline=rollout.healthy_deadline)
        except Preempted as err:
            run.say(f"{action.backend}: held; routing its old version preempted ({err.reason})")
            return
        if problem is None:
            run.route(action.backend, ids)
            run.say(f"{action.backend}: held; its old version routed again")
        else:
            run.say(f"{action.backend}: held; its old version does not answer: {problem}")


def _create_fresh(run: Run, backends: Sequence[Action]) -> dict[str, Outcome]:
    """Step 2a: backends that have no instance at all come up together: one Compose call, one
    wait (there is nothing old to keep serving, so no reason to go one by one)."""
    fresh = [
        a
        for a in backends
        if a.kind is ActionKind.CREATE
        and [s.kind for s in a.steps] == [StepKind.CREATE, StepKind.WAIT, StepKind.ROUTE]
    ]
    if len(fresh) <= 1:
        return {}
    try:
        return create_together(run, fresh)
    except Preempted as err:
        return {
            a.backend: Outcome(a, ok=False, error=f"preempted ({err.reason})", preempted=True)
            for a in fresh
        }


def converge_lb(
    action: Action,
    docker: DockerPort,
    say: Progress,
    progress: Progress | None,
    health_timeout: float,
) -> Outcome:
    try:
        if action.kind is ActionKind.REMOVE:
            docker.remove(action.container_ids)
            say("lb: removed")
            return Outcome(action, ok=True)
        if action.kind is ActionKind.START:
            docker.start(action.container_ids)
        else:
            say("building the load balancer image")
            docker.build(["lb"], progress=progress)
            if action.kind is ActionKind.RECREATE:
                docker.remove(action.container_ids)
            docker.up(["lb"], force_recreate=False)
    except ApplyError as err:
        return Outcome(action, ok=False, error=err.message, detail=err.detail)
    say("waiting for health: lb")
    problem = docker.wait_healthy(["lb"], timeout=health_timeout).get("lb")
    if problem is not None:
        return Outcome(action, ok=False, error=f"lb: {problem}")
    say("lb: healthy")
    return Outcome(action, ok=True)


def container_revisions(
    the_plan: Plan, observed: Observed, revision: Revision | None
) -> dict[str, str]:
    """Stamp the deploying commit on new containers; keep the old stamp on untouched ones."""
    out: dict[str, str] = {}
    for action in the_plan.actions:
        if action.kind in (ActionKind.CREATE, ActionKind.RECREATE, ActionKind.SCALE):
            if revision is not None and revision.commit:
                out[action.backend] = revision.commit
        else:
            for c in observed.for_backend(action.backend):
                if stamp := c.labels.get(REVISION):
                    out[action.backend] = stamp
    return out
