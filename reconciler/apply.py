"""EDGE orchestration: carry out a plan, make before break, and report what happened.

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

import errno
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from proxy.config import Revision

from .canary import Counters, counters_of, judge
from .docker import DockerPort, collectable
from .errors import ApplyError, LbrecError
from .files import atomic_write, read_text_or_none
from .labels import BuildInfo, config_hash
from .lock import waiting_editor
from .plan import Action, ActionKind, Plan, Step, StepKind, plan
from .proxy_admin import pool_document, wait_drained, wait_for_generation
from .render import Instance, backend_image, converged_pool, render_compose, render_pool
from .rollout_control import (
    forget_rollback,
    remember_rollback,
    rolled_back,
    take_request,
    write_state,
)
from .spec import BackendSpec, DesiredState
from .state import Observed, ObservedContainer
from .workspace import Workspace

__all__ = [
    "Hooks",
    "Outcome",
    "Report",
    "apply",
    "converge",
    "http_probe",
    "port_free",
    "preflight",
]

Progress = Callable[[str], None]
Probe = Callable[[str, float], str | None]  # (url, timeout) -> None if healthy, else why not


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    ok: bool
    error: str | None = None
    detail: str = ""
    rolled_back: bool = False  # a new version failed; the old instances kept serving
    deferred: bool = False  # not carried out by this pass (an edit preempted another pass)
    preempted: bool = False  # cut short: a newer change was waiting for the lock


@dataclass(frozen=True, slots=True)
class Report:
    plan: Plan
    check: bool
    outcomes: tuple[Outcome, ...] = ()
    files_written: tuple[str, ...] = ()
    routed: tuple[str, ...] = ()
    generation: str = ""

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def preempted(self) -> bool:
        return any(o.preempted for o in self.outcomes)

    @property
    def deferred(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.deferred)

    @property
    def changed(self) -> bool:
        return not self.plan.in_sync

    def recap(self) -> dict[str, int]:
        kinds = [a.kind for a in self.plan.actions]
        failed = {o.action.backend for o in self.failed}
        skipped = failed | {o.action.backend for o in self.deferred}
        return {
            "ok": sum(1 for a in self.plan.actions if a.backend not in skipped),
            "changed": sum(
                1
                for a in self.plan.changes
                if a.kind is not ActionKind.REMOVE and a.backend not in skipped
            ),
            "unchanged": kinds.count(ActionKind.UNCHANGED),
            "removed": sum(1 for a in self.plan.of(ActionKind.REMOVE) if a.backend not in skipped),
            "failed": len(failed),
            "rolled_back": sum(1 for o in self.failed if o.rolled_back),
            "deferred": len(self.deferred),
        }


def port_free(host: str, port: int) -> bool:
    """Nobody listens on ``host:port`` (a bind test, SO_REUSEADDR as a server would)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def http_probe(url: str, timeout: float) -> str | None:
    """GET ``url`` from the host: None on 200, else the answer or the error, for the report."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"GET {url} answered {response.status}"
    except urllib.error.HTTPError as err:
        return f"GET {url} answered {err.code}"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return f"GET {url}: {reason}"


def _late_probe(url: str, timeout: float) -> str | None:
    return http_probe(url, timeout)


@dataclass
class Hooks:
    """The proxy and the clock, injectable so unit tests run without either.

    ``confirm(generation)`` waits until the running proxy serves a pool generation (None: no
    proxy answers); ``drained(urls, timeout)`` waits until nothing is in flight to ``urls``
    through it and returns what is left (None: no proxy)."""

    confirm: Callable[[str], bool | None] | None = None
    drained: Callable[[Collection[str], float], int | None] | None = None
    # Why this pass should yield now (an edit waits for the lock, the file changed), or None:
    # checked while a rollout waits, so one slow backend never queues an emergency change.
    preempted: Callable[[], str | None] | None = None
    # Looked up when called, so that tests can replace http_probe.
    probe: Probe = field(default_factory=lambda: _late_probe)
    parallel: bool = True  # backends roll out side by side
    # The proxy's cumulative counters summed over instance URLs (a canary's judge); None
    # when no proxy answers.
    counters: Callable[[Collection[str]], Counters | None] | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


class Preempted(Exception):
    """A newer change waits: the pass ends early, and the next one carries on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Run:
    """The mutable state of one apply: which instances the pool routes to, and the outcomes."""

    desired: DesiredState
    workspace: Workspace
    docker: DockerPort
    hooks: Hooks
    say: Progress
    revision: Revision | None
    build: BuildInfo | None = None
    routed: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    known: dict[str, ObservedContainer] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    generation: str = ""
    # Backends roll out side by side (one thread each): the pool and Compose are shared.
    lock: threading.RLock = field(default_factory=threading.RLock)
    compose_lock: threading.Lock = field(default_factory=threading.Lock)
    # backend -> (ids of the canary's instances, their percent) while a canary runs
    split: dict[str, tuple[frozenset[str], int]] = field(default_factory=dict)
    promoted: set[str] = field(default_factory=set)  # `lbrec rollout promote --full`

    def route(self, backend: str, ids: Sequence[str]) -> None:
        """Add instances to the pool and publish it (the proxy confirms)."""
        with self.lock:
            for cid in ids:
                c = self.known[cid]
                assert c.url is not None
                self.routed.setdefault(backend, {})[cid] = (c.url, c.name or None)
            self.publish()

    def write_pool(self) -> str:
        with self.lock:  # re-entrant: callers that already hold it may call this
            return self._render_and_write()

    def _render_and_write(self) -> str:
        instances: dict[str, list[Instance]] = {}
        for name, by_id in self.routed.items():
            if not by_id:
                continue
            canary, percent = self.split.get(name, (frozenset(), 0))
            entries: list[Instance] = []
            split = {cid in canary for cid in by_id} == {True, False}
            for cid, (url, inst) in by_id.items():
                if not split:  # one version routed: no split to write
                    entries.append((url, inst))
                elif cid in canary:
                    entries.append((url, inst, "canary", percent))
                else:
                    entries.append((url, inst, "stable", 100 - percent))
            instances[name] = entries
        config = render_pool(self.desired, instances=instances, revision=self.revision)
        if atomic_write(self.workspace.pool_file, config.to_json()):
            self.written.append(str(self.workspace.pool_file))
        self.generation = config.generation
        return config.generation

    def publish(self) -> bool:
        """Write the pool and wait until the proxy serves it; False if a proxy answers but
        does not confirm (it may have refused the file), True otherwise."""
        with self.lock:
            generation = self.write_pool()
            if self.hooks.confirm is not None and self.hooks.confirm(generation) is False:
                self.say(
                    f"the proxy at {self.desired.admin} did not confirm generation "
                    f"{generation}; going on"
                )
                return False
            return True

    def check_preempted(self) -> None:
        if self.hooks.preempted is not None and (why := self.hooks.preempted()):
            raise Preempted(why)

    def retire(self, backend: str, ids: Sequence[str], drain_timeout: float) -> None:
        """Out of the pool, confirmed, drained, then stopped (grace period) and removed.

        Preempted while draining, the instances stay out of the pool but running: the next
        pass finds them unrouted and retires them again, so nothing in flight is cut."""
        confirmed = True
        with self.lock:
            urls = [self.routed.get(backend, {}).pop(i, ("", None))[0] for i in ids]
            urls = [u for u in urls if u]
            if urls:
                confirmed = self.publish()
        if not confirmed:
            # The proxy may still route to them (it refused the new pool, or lags): stopping
            # them now could fail requests. Left running and unrouted: the next pass retires.
            self.say(f"{backend}: not stopping {', '.join(i[:12] for i in ids)}: unconfirmed")
            return
        if urls and self.hooks.drained is not None:
            left = self.hooks.drained(urls, drain_timeout)
            if left:
                self.check_preempted()
                self.say(
                    f"{backend}: {left} request(s) still in flight after "
                    f"{drain_timeout:g}s (drain_timeout): stopping anyway"
                )
        self.docker.stop_remove(ids)

    def wait_ready(
        self, backend: BackendSpec, ids: Sequence[str], *, min_healthy: float, deadline: float
    ) -> str | None:
        """Every instance answers its health path from the host, without a failure, for
        ``min_healthy`` s; None when so, else the reason (last answer and log tail)."""
        return self.wait_many({backend.name: (backend, ids, min_healthy, deadline)})[backend.name]

    def wait_many(
        self, groups: Mapping[str, tuple[BackendSpec, Sequence[str], float, float]]
    ) -> dict[str, str | None]:
        """:meth:`wait_ready` for several backends at once (a first deploy of many backends
        waits about once, not once per backend); maps each backend to None or its problem."""
        hooks = self.hooks
        timeout = self.desired.health.timeout
        start = hooks.clock()
        healthy_since: dict[str, float | None] = {}
        owner: dict[str, str] = {}
        for name, (_spec, ids, _min, _deadline) in groups.items():
            for cid in ids:
                healthy_since[cid] = None
                owner[cid] = name
        last: dict[str, str] = {}
        result: dict[str, str | None] = {}
        next_inspect = start
        while len(result) < len(groups):
            self.check_preempted()
            now = hooks.clock()
            pending = [cid for cid in healthy_since if owner[cid] not in result]
            if now >= next_inspect:
                for c in self.docker.inspect(pending):
                    self.known[c.id] = c
                    if (not c.running or c.state == "restarting") and c.id in owner:
                        # a new instance that restarts has exited at least once: crash loop
                        what = "exited and restarts" if c.running else c.state
                        result[owner[c.id]] = (
                            f"instance {c.name or c.short_id} {what}: {self.docker.logs_tail(c.id)}"
                        )
                next_inspect = now + 1.0
            for cid in pending:
                name = owner[cid]
                if name in result:
                    continue
                seen = self.known.get(cid)
                if seen is None or seen.url is None:
                    last[cid] = "no published port yet"
                    healthy_since[cid] = None
                    continue
                path = groups[name][0].health_path(self.desired)
                problem = hooks.probe(seen.url + path, timeout)
                if problem is None:
                    if healthy_since[cid] is None:
                        healthy_since[cid] = hooks.clock()
                else:
                    last[cid] = problem
                    healthy_since[cid] = None
            now = hooks.clock()
            for name, (_spec, ids, min_healthy, deadline) in groups.items():
                if name in result:
                    continue
                since = [healthy_since[cid] for cid in ids]
                if all(t is not None and now - t >= min_healthy for t in since):
                    result[name] = None
                elif now - start >= deadline:
                    bad = next(
                        (
                            cid
                            for cid in ids
                            if (t := healthy_since[cid]) is None or now - t < min_healthy
                        ),
                        ids[0],
                    )
                    gone = self.known.get(bad)
                    what = gone.name if gone is not None and gone.name else bad[:12]
                    answer = last.get(bad, "healthy, but not for min_healthy_time")
                    result[name] = (
                        f"instance {what} not healthy within {deadline:g}s (healthy_deadline): "
                        f"{answer}; log: {self.docker.logs_tail(bad)}"
                    )
            if len(result) < len(groups):
                hooks.sleep(0.2)
        return result


def _images(
    desired: DesiredState,
    actions: Sequence[Action],
    *,
    docker: DockerPort,
    build: BuildInfo,
    say: Progress,
    progress: Progress | None,
) -> dict[str, ApplyError]:
    """Pull or build every image a new instance needs, before anything changes. Returns the
    backends whose image failed (their rollout is skipped: nothing of them changes)."""
    failed: dict[str, ApplyError] = {}
    done: dict[str, ApplyError | None] = {}
    for action in actions:
        spec = desired.backend(action.backend)
        if spec is None or not any(s.kind is StepKind.CREATE for s in action.steps):
            continue
        image = backend_image(desired, spec, build)
        if image not in done:
            done[image] = None
            try:
                if docker.has_image(image):
                    pass
                elif spec.image is not None:
                    say(f"pulling {image} ({spec.name})")
                    docker.pull(image)
                else:
                    say(f"building {image} ({spec.name})")
                    docker.build([spec.name], progress=progress)
            except ApplyError as err:
                done[image] = err
        problem = done[image]
        if problem is not None:
            failed[action.backend] = problem
    return failed


def apply(
    desired: DesiredState,
    observed: Observed,
    the_plan: Plan,
    *,
    workspace: Workspace,
    docker: DockerPort,
    build: BuildInfo,
    revision: Revision | None = None,
    progress: Progress | None = None,
    health_timeout: float = 60.0,
    hooks: Hooks | None = None,
    only: Collection[str] | None = None,
    held: Mapping[str, str] | None = None,
) -> Report:
    """Carry out ``the_plan`` (see the module docstring for the order). With ``only``, the
    container work of other backends is deferred (reported, not done); so is that of the
    ``held`` backends (a version that was rolled back, with why); the pool still takes every
    new weight."""
    say = progress or (lambda _msg: None)
    hooks = hooks or Hooks()
    run = _Run(desired, workspace, docker, hooks, say, revision, build=build)
    outcomes: dict[str, Outcome] = {}
    backends = [a for a in the_plan.actions if a.role == "backend"]
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
    backends = [a for a in backends if a.backend not in outcomes]

    revisions = _container_revisions(the_plan, observed, revision)
    compose = render_compose(desired, build, source=workspace.spec_file.name, revisions=revisions)
    if atomic_write(workspace.compose_file, compose):
        run.written.append(str(workspace.compose_file))

    # 0. Images before any container: a pull or build that fails changes nothing of its backend.
    broken = _images(desired, backends, docker=docker, build=build, say=say, progress=progress)
    for name, err in broken.items():
        action = next(a for a in backends if a.backend == name)
        outcomes[name] = Outcome(action, ok=False, error=err.message, detail=err.detail)

    # 1. The pool routes what serves now (matched by URL), at the desired weights; backends
    # that go leave it before their containers do.
    pool_urls: dict[str, set[str]] = {}
    for entry in observed.pool.backends if observed.pool is not None else ():
        pool_urls.setdefault(entry.name, set()).add(entry.url)
    for spec in desired.backends:
        run.routed[spec.name] = {
            c.id: (c.url, c.name or None)
            for c in observed.for_backend(spec.name)
            if c.running and c.url is not None and c.url in pool_urls.get(spec.name, set())
        }
    for c in observed.containers:
        run.known[c.id] = c
    # A canary in progress (a pass cut short) keeps its split until this pass decides.
    canary: dict[str, tuple[set[str], int]] = {}
    for entry in observed.pool.backends if observed.pool is not None else ():
        if entry.version == "canary" and entry.percent is not None:
            canary.setdefault(entry.name, (set(), entry.percent))[0].add(entry.url)
    for name, (urls, percent) in canary.items():
        ids = frozenset(i for i, (url, _) in run.routed.get(name, {}).items() if url in urls)
        if ids:
            run.split[name] = (ids, percent)
    run.publish()
    for action in backends:
        if action.kind is ActionKind.REWEIGHT and not action.steps:
            outcomes[action.backend] = Outcome(action, ok=True)

    # 2a. Backends that have no instance at all come up together: one Compose call, one wait
    # (there is nothing old to keep serving, so no reason to go one by one).
    fresh = [
        a
        for a in backends
        if a.kind is ActionKind.CREATE
        and a.backend not in outcomes
        and [s.kind for s in a.steps] == [StepKind.CREATE, StepKind.WAIT, StepKind.ROUTE]
    ]
    if len(fresh) > 1:
        try:
            outcomes.update(_create_together(run, fresh))
        except Preempted as err:
            for action in fresh:
                outcomes.setdefault(
                    action.backend,
                    Outcome(action, ok=False, error=f"preempted ({err.reason})", preempted=True),
                )

    # 2. Each backend's steps, in plan order (removals first). A newer change that waits
    # ends the pass here: what is half done was undone, the rest is left to the next pass.
    todo = [a for a in backends if a.backend not in outcomes and a.steps]
    removals = [a for a in todo if a.kind is ActionKind.REMOVE]
    rollouts = [a for a in todo if a.kind is not ActionKind.REMOVE]
    for group in (removals, rollouts):
        outcomes.update(_roll_all(run, group, parallel=hooks.parallel))

    # 3. The pool once more (unchanged unless a step was skipped).
    generation = run.write_pool()

    # 4. The load balancer's own container (proxy.mode: container) reads that pool at start.
    for action in the_plan.actions:
        if action.role == "lb" and action.kind is not ActionKind.UNCHANGED:
            outcomes["lb"] = _converge_lb(action, docker, say, progress, health_timeout)

    # 5. Images lbrec built and nothing runs any more: keep the previous one per repository
    # (a fast rollback), remove the rest. Only after a pass where everything went well.
    if all(o.ok for o in outcomes.values()) and any(a.steps for a in backends):
        _collect_images(docker, say)
    ordered = tuple(outcomes[a.backend] for a in the_plan.changes if a.backend in outcomes)
    return Report(
        plan=the_plan,
        check=False,
        outcomes=ordered,
        files_written=tuple(run.written),
        routed=tuple(sorted(name for name, by_id in run.routed.items() if by_id)),
        generation=generation,
    )


def _collect_images(docker: DockerPort, say: Progress) -> None:
    in_use = {c.image for c in docker.observe()}
    for reference in collectable(docker.built_images(), in_use):
        try:
            docker.remove_image(reference)
            say(f"removed old image {reference}")
        except ApplyError as err:  # e.g. used by a container of someone else: leave it
            say(f"kept image {reference}: {err.message}")


def _roll_all(run: _Run, actions: Sequence[Action], *, parallel: bool) -> dict[str, Outcome]:
    """Each backend's steps; backends side by side (a thread each, at most 8) when
    ``parallel``: a backend's ``max_parallel`` bounds its own batches, not the others'. A newer
    change that waits ends every rollout at its next wait: what is half done is undone, the
    rest is left to the next pass."""
    out: dict[str, Outcome] = {}

    def one(action: Action) -> Outcome:
        canary = any(s.kind is StepKind.JUDGE or s.kind is StepKind.PAUSE for s in action.steps)
        if canary:
            take_request(run.workspace.folder, action.backend)  # a stale request: not ours
        try:
            outcome = _roll(run, action)
            _remember(run, outcome)
            return outcome
        except (LbrecError, OSError) as err:
            message = err.message if isinstance(err, LbrecError) else f"{type(err).__name__}: {err}"
            return Outcome(action, ok=False, error=f"{action.backend}: {message}")
        except Preempted as err:
            why = f"preempted ({err.reason}); the next pass carries on"
            run.say(f"{action.backend}: {why}")
            return Outcome(
                action,
                ok=False,
                error=f"{action.backend}: {why}; its old instances keep serving",
                preempted=True,
            )
        finally:
            if canary:
                write_state(run.workspace.folder, action.backend, None)
                take_request(run.workspace.folder, action.backend)

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
        if "preempted (" in (out[action.backend].error or ""):
            stopped = "preempted: a newer change waits"
    return out


def _remember(run: _Run, outcome: Outcome) -> None:
    """A rolled-back version is remembered (loops hold it until it changes); a backend that
    converged is forgotten."""
    name = outcome.action.backend
    spec = run.desired.backend(name)
    folder = run.workspace.folder
    if outcome.ok:
        forget_rollback(folder, name)
    elif outcome.rolled_back and spec is not None and run.build is not None:
        version = config_hash(spec, run.desired, run.build)
        remember_rollback(folder, name, version, outcome.error or "rolled back")


def _roll(run: _Run, action: Action) -> Outcome:
    """Carry out one backend's steps; a batch that fails is removed and the rest skipped."""
    spec = run.desired.backend(action.backend)
    name = action.backend
    rollout = spec.rollout_of(run.desired) if spec is not None else run.desired.rollout
    batches: dict[int, tuple[str, ...]] = {}
    created: set[int] = set()  # batches this pass made (a failure removes them)
    restarted: set[int] = set()  # batches of current instances started again
    try:
        for step in action.steps:
            if step.kind is StepKind.RETIRE:
                run.retire(name, step.container_ids, rollout.drain_timeout)
                with run.lock:
                    if name in run.split and set(run.routed.get(name, {})) <= run.split[name][0]:
                        del run.split[name]  # promoted: one version left
                        write_state(run.workspace.folder, name, None)
                run.say(f"{name}: removed {', '.join(i[:12] for i in step.container_ids)}")
            elif step.kind is StepKind.CREATE:
                batches[step.batch] = _create(run, name, step)
                created.add(step.batch)
                run.say(f"{name}: started {step.count} new instance(s), waiting for health")
            elif step.kind is StepKind.START:
                run.docker.start(step.container_ids)
                batches[step.batch] = step.container_ids
                restarted.add(step.batch)
            elif step.kind is StepKind.WAIT:
                ids = batches.get(step.batch, step.container_ids)
                assert spec is not None
                try:
                    problem = run.wait_ready(
                        spec,
                        ids,
                        # min_healthy_time proves a new version; an instance of the version
                        # already serving, started again (stopped by hand, or while the engine
                        # was away), is routed on its first healthy answer: the proxy's own
                        # health checks keep watching it.
                        min_healthy=0.0 if step.batch in restarted else rollout.min_healthy_time,
                        deadline=rollout.healthy_deadline,
                    )
                except Preempted:
                    if step.batch in created:
                        run.docker.stop_remove(ids)  # created by this pass: not half left
                    raise
                if problem is not None:
                    return _roll_back(run, action, ids, problem, created=step.batch in created)
            elif step.kind is StepKind.ROUTE:
                ids = batches.get(step.batch, step.container_ids)
                run.route(name, ids)
                run.say(f"{name}: routed to {', '.join(run.known[i].endpoint or i for i in ids)}")
            elif step.kind in (StepKind.SPLIT, StepKind.JUDGE, StepKind.PAUSE) and (
                name in run.promoted and step.percent < 100
            ):
                continue  # promoted in full: straight to 100 %
            elif step.kind is StepKind.SPLIT:
                ids = batches.get(step.batch, step.container_ids)
                with run.lock:
                    run.split[name] = (frozenset(ids), step.percent)
                    run.route(name, ids)
                run.say(f"{name}: {step.percent}% of the traffic on the new version")
                if step.percent < 100:
                    _canary_state(run, action, step, "judging")
                else:  # judged: what is left is the old version's drain
                    write_state(run.workspace.folder, name, None)
            elif step.kind is StepKind.JUDGE:
                assert spec is not None
                ids = batches.get(step.batch, step.container_ids)
                problem = _judge_step(run, spec, ids, step.percent)
                if problem is not None:
                    return _roll_back_canary(run, action, ids, problem)
            elif step.kind is StepKind.PAUSE:
                assert spec is not None
                ids = batches.get(step.batch, step.container_ids)
                _canary_state(run, action, step, "paused")
                run.say(f"{name}: paused at {step.percent}%: `lbrec rollout promote {name}`")
                problem = _pause_step(run, name)
                if problem is not None:
                    return _roll_back_canary(run, action, ids, problem)
    except ApplyError as err:
        return Outcome(action, ok=False, error=err.message, detail=err.detail)
    return Outcome(action, ok=True)


def _scale_up(run: _Run, counts: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
    """Add ``counts[name]`` instances to each service beside what exists (one Compose call);
    the new containers' ids per service."""

    def mine(c: ObservedContainer) -> bool:
        return c.backend in counts and c.role == "backend"

    with run.compose_lock:  # one Compose call on the project at a time
        before = [c for c in run.docker.observe() if mine(c)]
        known = {c.id for c in before}
        totals = {
            name: sum(1 for c in before if c.backend == name) + n for name, n in counts.items()
        }
        run.docker.scale(totals)
        after = run.docker.observe()
    fresh: dict[str, list[str]] = {name: [] for name in counts}
    for c in after:
        if mine(c) and c.id not in known:
            run.known[c.id] = c
            fresh[c.backend].append(c.id)
    for name, n in counts.items():
        if len(fresh[name]) < n:
            raise ApplyError(
                f"{name}: asked Compose for {n} new instance(s), got {len(fresh[name])}",
                backend=name,
            )
    return {name: tuple(ids) for name, ids in fresh.items()}


def _create(run: _Run, name: str, step: Step) -> tuple[str, ...]:
    """Scale the service up by ``step.count`` beside what exists; the new containers' ids."""
    return _scale_up(run, {name: step.count})[name]


def _create_together(run: _Run, actions: Sequence[Action]) -> dict[str, Outcome]:
    """First deploy of several backends: create all, wait for all at once, route the healthy
    ones in one pool change; a failed one is removed and named."""
    counts = {a.backend: a.steps[0].count for a in actions}
    by_name = {a.backend: a for a in actions}
    try:
        created = _scale_up(run, counts)
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
        run.docker.stop_remove([i for ids in created.values() for i in ids])
        raise
    out: dict[str, Outcome] = {}
    for name, problem in problems.items():
        if problem is None:
            with run.lock:
                for cid in created[name]:
                    c = run.known[cid]
                    assert c.url is not None
                    run.routed.setdefault(name, {})[cid] = (c.url, c.name or None)
            out[name] = Outcome(by_name[name], ok=True)
        else:
            run.docker.stop_remove(created[name])
            out[name] = Outcome(by_name[name], ok=False, error=f"{name}: {problem}")
    run.publish()
    run.say(f"routed to {', '.join(n for n, p in problems.items() if p is None) or 'none'}")
    return out


def _judge_step(run: _Run, spec: BackendSpec, ids: Sequence[str], percent: int) -> str | None:
    """Hold the step for ``interval`` and judge the new version on its own answers; a step
    with too few requests is extended (up to 10 intervals). None: passed; else the reason."""
    rollout = spec.rollout_of(run.desired)
    analysis = rollout.analysis
    hooks = run.hooks
    urls = [u for i in ids if (u := run.known[i].url) is not None]
    unjudged = f"no proxy answers on {run.desired.admin}: the canary cannot be judged"
    if hooks.counters is None or (before := hooks.counters(urls)) is None:
        return unjudged
    start = hooks.clock()
    reason = ""
    for extension in range(10):
        end = start + rollout.interval * (extension + 1)
        while hooks.clock() < end:
            run.check_preempted()
            asked = take_request(run.workspace.folder, spec.name)
            if asked == "abort":
                return f"step {percent}%: aborted by `lbrec rollout abort`"
            if asked is not None:
                if asked == "promote-full":
                    run.promoted.add(spec.name)
                run.say(f"{spec.name}: step {percent}% promoted by `lbrec rollout {asked}`")
                return None
            hooks.sleep(max(min(0.2, end - hooks.clock()), 0.01))
        after = hooks.counters(urls)
        if after is None:
            return unjudged
        verdict = judge(
            after - before,
            max_error_rate=analysis.max_error_rate,
            max_p99=analysis.max_p99,
            min_requests=analysis.min_requests,
        )
        if verdict.kind == "pass":
            run.say(f"{spec.name}: step {percent}% passed: {verdict.reason}")
            return None
        if verdict.kind == "fail":
            return f"step {percent}%: {verdict.reason}"
        reason = verdict.reason
        run.say(f"{spec.name}: step {percent}% extended: {reason}")
    return f"step {percent}%: {reason} in {10 * rollout.interval:g}s"


def _pause_step(run: _Run, name: str) -> str | None:
    """Hold until `lbrec rollout promote` (None) or `abort` (the reason to roll back)."""
    while True:
        run.check_preempted()
        asked = take_request(run.workspace.folder, name)
        if asked == "abort":
            return "a pause: aborted by `lbrec rollout abort`"
        if asked is not None:
            if asked == "promote-full":
                run.promoted.add(name)
            return None
        run.hooks.sleep(0.2)


def _canary_state(run: _Run, action: Action, step: Step, state: str) -> None:
    spec = run.desired.backend(action.backend)
    rollout = spec.rollout_of(run.desired) if spec is not None else run.desired.rollout
    write_state(
        run.workspace.folder,
        action.backend,
        {
            "state": state,
            "percent": step.percent,
            "steps": list(rollout.steps),
            "interval": rollout.interval,
            "since": time.time(),
            "reason": action.reason,
        },
    )


def _roll_back_canary(run: _Run, action: Action, ids: Sequence[str], problem: str) -> Outcome:
    """All traffic back to the old version at once (a rollback needs no judgement), then the
    new instances drain and go."""
    name = action.backend
    spec = run.desired.backend(name)
    rollout = spec.rollout_of(run.desired) if spec is not None else run.desired.rollout
    with run.lock:
        run.split.pop(name, None)
    write_state(run.workspace.folder, name, None)
    try:
        run.retire(name, ids, rollout.drain_timeout)
    except ApplyError as err:
        problem += f" (removing the new instances failed too: {err.message})"
    except Preempted:
        problem += " (its drain was cut short: the next pass removes the new instances)"
    run.say(f"{name}: canary rolled back at {problem}")
    return Outcome(
        action,
        ok=False,
        error=f"{name}: canary rolled back at {problem}; the old version serves all traffic",
        rolled_back=True,
    )


def _roll_back(
    run: _Run, action: Action, ids: Sequence[str], problem: str, *, created: bool
) -> Outcome:
    """A batch failed its wait. One this pass ``created`` is removed; existing containers it
    started or would have routed are left as they are (the next pass sees them again). Only a
    new *version* that failed counts as rolled back (loops then hold that version)."""
    if created:
        try:
            run.docker.stop_remove(ids)
        except ApplyError as err:
            problem += f" (removing the new instance failed too: {err.message})"
    old = len(run.routed.get(action.backend, {}))
    if not action.new_version:
        run.say(f"{action.backend}: not healthy; {old} instance(s) keep serving")
        return Outcome(action, ok=False, error=f"{action.backend}: {problem}")
    run.say(f"{action.backend}: rolled back; {old} old instance(s) keep serving")
    return Outcome(
        action,
        ok=False,
        error=f"{action.backend}: new version not healthy, rolled back: {problem}",
        rolled_back=created,
    )


def _converge_lb(
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


def _container_revisions(
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
                if stamp := c.labels.get("lbrec.revision"):
                    out[action.backend] = stamp
    return out


def preflight(workspace: Workspace, docker: DockerPort, desired: DesiredState) -> None:
    """The checks of an apply that can fail before anything changes (the engine answers),
    run by `lbrec init/add/remove` before the edited file is written. Backend ports cannot be
    taken: Docker allocates each instance's host port."""
    del workspace, desired
    docker.check()


def converge(
    workspace: Workspace,
    docker: DockerPort,
    *,
    desired: DesiredState | None = None,
    check: bool,
    revision: Revision | None = None,
    progress: Progress | None = None,
    health_timeout: float = 60.0,
    on_plan: Callable[[Plan], None] | None = None,
    confirm: Callable[[str], bool | None] | None = None,
    hooks: Hooks | None = None,
    only: Collection[str] | None = None,
    hold_rolled_back: bool = False,
) -> Report:
    """One level-triggered pass: load, observe, plan, and (unless ``check``) apply."""
    desired = desired if desired is not None else workspace.load()
    admin = desired.admin
    if confirm is None:  # make before break against the proxy serving this desired state
        confirm = lambda generation: wait_for_generation(admin, generation)  # noqa: E731
    if hooks is None:
        preempted = _preemption(workspace)
        hooks = Hooks(
            confirm=confirm,
            drained=lambda urls, timeout: wait_drained(
                admin, urls, timeout=timeout, cancel=preempted
            ),
            preempted=preempted,
            counters=lambda urls: _proxy_counters(admin, urls),
        )
    build = workspace.build_info(desired, stage=not check)  # check mode only reads
    docker.check()
    observed = workspace.observe(docker.observe())
    if revision is None and observed.pool is not None:
        # A plain apply after `lbrec sync` keeps the deployed commit in backends.json.
        revision = observed.pool.revision
    revisions = _container_revisions_for_plan(desired, observed, build, revision)
    target = converged_pool(desired, observed, build, revision)
    compose = render_compose(desired, build, source=workspace.spec_file.name, revisions=revisions)
    the_plan = plan(desired, observed, build=build, target_pool=target, compose_text=compose)
    if check:
        return Report(plan=the_plan, check=True, generation=target.generation)
    if on_plan is not None:
        on_plan(the_plan)
    return apply(
        desired,
        observed,
        the_plan,
        workspace=workspace,
        docker=docker,
        build=build,
        revision=revision,
        progress=progress,
        health_timeout=health_timeout,
        hooks=hooks,
        only=only,
        held=_held(workspace, desired, build) if hold_rolled_back else None,
    )


def _held(workspace: Workspace, desired: DesiredState, build: BuildInfo) -> dict[str, str]:
    """Backends whose desired version is one that was rolled back: a loop does not roll it
    out again (a tight loop of the same failure) until the file or the commit changes it."""
    out: dict[str, str] = {}
    for name, entry in rolled_back(workspace.folder).items():
        spec = desired.backend(name)
        if spec is not None and config_hash(spec, desired, build) == entry.get("hash"):
            out[name] = (
                f"held: this version was rolled back ({entry.get('reason', '')}); a change of "
                "it retries, or `lbrec apply` by hand"
            )
    return out


def _proxy_counters(admin: str, urls: Collection[str]) -> Counters | None:
    document = pool_document(admin, timeout=2.0)
    return None if document is None else counters_of(document, urls)


def _preemption(workspace: Workspace) -> Callable[[], str | None]:
    """Why a pass over ``workspace`` should yield: an edit command waits for the lock, or the
    desired-state file no longer holds what this pass read."""
    spec_file = workspace.spec_file
    seen = read_text_or_none(spec_file)

    def preempted() -> str | None:
        if (who := waiting_editor(workspace.folder)) is not None:
            return f"{who} is waiting for the lock"
        try:
            now = read_text_or_none(spec_file)
        except (OSError, UnicodeDecodeError):
            return None
        if now != seen:
            return f"{spec_file.name} changed"
        return None

    return preempted


def _container_revisions_for_plan(
    desired: DesiredState, observed: Observed, build: BuildInfo, revision: Revision | None
) -> dict[str, str]:
    preliminary = plan(desired, observed, build=build)
    return _container_revisions(preliminary, observed, revision)
