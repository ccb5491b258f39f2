"""One pass's state and its verbs: route, retire, split, end a split, scale up, wait until ready."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from ...proxy.config import Revision
from ..core.certs import HeldCertificate
from ..core.errors import ApplyError
from ..core.labels import BuildInfo
from ..core.ports import DockerPort, Progress, WorkspacePort
from ..core.render import Instance, render_pool
from ..core.spec import BackendSpec, DesiredState
from ..core.state import ObservedContainer
from .hooks import Hooks, Preempted

# How often a wait on health probes looks for a newer change (an edit waiting for the lock).
PREEMPT_POLL = 0.05


class Run:
    """The mutable state of one apply: which instances the pool routes to, a canary's split,
    what this pass knows of each container and the files it wrote.

    The state is private: the steps change it through the verbs (:meth:`adopt`,
    :meth:`route`, :meth:`retire`, :meth:`split`, :meth:`end_split`, :meth:`scale_up`), each
    under the pass's lock, since backends roll out side by side (one thread each) over one
    pool and one engine project."""

    def __init__(
        self,
        desired: DesiredState,
        workspace: WorkspacePort,
        docker: DockerPort,
        hooks: Hooks,
        *,
        say: Progress,
        revision: Revision | None = None,
        build: BuildInfo | None = None,
        epoch: int | None = None,
        certificates: tuple[HeldCertificate, ...] = (),
    ) -> None:
        self.desired = desired
        self.workspace = workspace
        self.docker = docker
        self.hooks = hooks
        self.say = say
        self.revision = revision
        self.build = build
        # The engine's epoch when this pass observed it (adapters/engine_epoch.py): once the
        # engine has gone away since, every pool this pass writes is frozen (stale ports).
        self.epoch = epoch
        # The certificates obtained over ACME (Observed.certificates): the pool lists them.
        self.certificates = certificates
        self.generation = ""  # of the last pool written
        self._routed: dict[str, dict[str, tuple[str, str | None]]] = {}
        self._known: dict[str, ObservedContainer] = {}
        self._written: list[str] = []
        # backend -> (ids of the canary's instances, their percent) while a canary runs
        self._split: dict[str, tuple[frozenset[str], int]] = {}
        self._promoted: set[str] = set()  # `lbrec rollout promote --full`
        self._lock = threading.RLock()  # the pool
        self._scale_lock = threading.Lock()  # one scale call on the project at a time

    # -- what the pass knows -------------------------------------------------------------
    def know(self, containers: Iterable[ObservedContainer]) -> None:
        with self._lock:
            for c in containers:
                self._known[c.id] = c

    def container(self, cid: str) -> ObservedContainer:
        """A container this pass has seen (observed, created or inspected)."""
        return self._known[cid]

    def seen(self, cid: str) -> ObservedContainer | None:
        return self._known.get(cid)

    def routed(self, backend: str) -> dict[str, str]:
        """The instances of ``backend`` the pool routes now: container id -> URL."""
        with self._lock:
            return {cid: url for cid, (url, _) in self._routed.get(backend, {}).items()}

    def routed_backends(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(name for name, by_id in self._routed.items() if by_id))

    @property
    def written(self) -> tuple[str, ...]:
        return tuple(self._written)

    def wrote(self, path: str | None) -> None:
        """A file this pass changed (None: it was unchanged), for the report."""
        if path is not None:
            self._written.append(path)

    def promote_full(self, backend: str) -> None:
        """`lbrec rollout promote --full`: the canary's remaining steps are skipped."""
        self._promoted.add(backend)

    def promoted(self, backend: str) -> bool:
        return backend in self._promoted

    # -- the verbs -------------------------------------------------------------------------
    def adopt(self, backend: str, containers: Iterable[ObservedContainer]) -> None:
        """What the pool routes of ``backend`` as this pass begins (nothing is published)."""
        with self._lock:
            self._routed[backend] = {
                c.id: (c.url, c.name or None) for c in containers if c.url is not None
            }

    def route(self, backend: str, ids: Sequence[str], *, publish: bool = True) -> None:
        """Add instances to the pool and (unless ``publish`` is False: the caller publishes
        several at once) publish it; the proxy confirms."""
        with self._lock:
            for cid in ids:
                c = self._known[cid]
                assert c.url is not None
                self._forget_url(c.url, keep=cid)
                self._routed.setdefault(backend, {})[cid] = (c.url, c.name or None)
            if publish:
                self.publish()

    def split(
        self, backend: str, ids: Sequence[str], percent: int, *, publish: bool = True
    ) -> None:
        """A canary's step: ``ids`` (routed with it) take ``percent`` of the backend's share."""
        with self._lock:
            self._split[backend] = (frozenset(ids), percent)
            self.route(backend, ids, publish=publish)

    def end_split(self, backend: str, *, promoted: bool = False) -> bool:
        """The canary's split ends: at a rollback always; once ``promoted``, only when every
        routed instance is the canary's (one version left). True when it ended."""
        with self._lock:
            if backend not in self._split:
                return False
            if promoted and not set(self._routed.get(backend, {})) <= self._split[backend][0]:
                return False
            del self._split[backend]
            return True

    def _forget_url(self, url: str, *, keep: str) -> None:
        """One URL is one container: an entry of another container at ``url`` (its port read
        before an engine restart handed it to ``keep``) leaves the pool."""
        for by_id in self._routed.values():
            for cid in [i for i, (u, _name) in by_id.items() if u == url and i != keep]:
                del by_id[cid]

    def scale_up(self, counts: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
        """Add ``counts[name]`` instances to each backend beside what exists (one call on the
        engine); the new containers' ids per backend, known to this pass from then on."""

        def mine(c: ObservedContainer) -> bool:
            return c.backend in counts and c.role == "backend"

        with self._scale_lock:  # one scale call on the project at a time
            before = [c for c in self.docker.observe() if mine(c)]
            known = {c.id for c in before}
            totals = {
                name: sum(1 for c in before if c.backend == name) + n for name, n in counts.items()
            }
            told = self.docker.scale(totals)
            after = (
                self.docker.observe()
                if told is None
                else self.docker.inspect([i for ids in told.values() for i in ids])
            )
        fresh: dict[str, list[str]] = {name: [] for name in counts}
        for c in after:
            if mine(c) and c.id not in known:
                fresh[c.backend].append(c.id)
        self.know(c for c in after if mine(c) and c.id not in known)
        for name, n in counts.items():
            # An engine that names the new ones (Swarm) may have made some itself already (a
            # task lost with its node, refilled): fewer is no error, the next pass routes them.
            if len(fresh[name]) < n and told is None:
                raise ApplyError(
                    f"{name}: asked the engine for {n} new instance(s), got {len(fresh[name])}",
                    backend=name,
                )
        return {name: tuple(ids) for name, ids in fresh.items()}

    # -- the pool ----------------------------------------------------------------------------
    def write_pool(self) -> str:
        with self._lock:  # re-entrant: callers that already hold it may call this
            return self._render_and_write()

    def _render_and_write(self) -> str:
        instances: dict[str, list[Instance]] = {}
        for name, by_id in self._routed.items():
            if not by_id:
                continue
            canary, percent = self._split.get(name, (frozenset(), 0))
            entries: list[Instance] = []
            split = {cid in canary for cid in by_id} == {True, False}
            for cid, (url, inst) in by_id.items():
                if not split:  # one version routed: no split to write
                    entries.append((url, inst, None, None, cid))
                elif cid in canary:
                    entries.append((url, inst, "canary", percent, cid))
                else:
                    entries.append((url, inst, "stable", 100 - percent, cid))
            instances[name] = entries
        # A canary's split: its sticky hash is keyed from the host's secret (docs/security.md)
        secret = self.workspace.sticky_secret() if self._split else b""
        config = render_pool(
            self.desired,
            instances=instances,
            revision=self.revision,
            sticky_secret=secret,
            source=str(self.workspace.spec_file),  # whose pool: see proxy.config.Deployment
            certificates=self.certificates,
        )
        # Frozen if the engine went away since this pass observed it (its ports are stale).
        config, path = self.workspace.write_pool(config, epoch=self.epoch)
        self.wrote(path)
        self.generation = config.generation
        return config.generation

    def publish(self) -> bool:
        """Write the pool and wait until the proxy serves it; False if a proxy answers but
        does not confirm (it may have refused the file), True otherwise."""
        with self._lock:
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
        with self._lock:
            urls = [self._routed.get(backend, {}).pop(i, ("", None))[0] for i in ids]
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
        wait = _HealthWait(self, groups)
        try:
            while len(wait.result) < len(groups):
                self.check_preempted()
                pending = [cid for cid in wait.owner if wait.owner[cid] not in wait.result]
                wait.inspect(pending)
                wait.probe(pending)
                wait.decide_ready()
                if len(wait.result) < len(groups):
                    self.hooks.sleep(0.2)
        finally:
            wait.close()
        return wait.result


class _HealthWait:
    """The state of one :meth:`Run.wait_many`: since when each instance answers healthy, its
    last failure, and each backend's verdict once it has one."""

    def __init__(
        self, run: Run, groups: Mapping[str, tuple[BackendSpec, Sequence[str], float, float]]
    ) -> None:
        self.run = run
        self.groups = groups
        self.start = run.hooks.clock()
        self.owner = {cid: name for name, (_s, ids, _m, _d) in groups.items() for cid in ids}
        self.healthy_since: dict[str, float | None] = dict.fromkeys(self.owner)
        self.last: dict[str, str] = {}
        self.result: dict[str, str | None] = {}
        self.next_inspect = self.start
        # Probes run side by side, and the wait for them is cut into slices that look for a
        # newer change: an instance that hangs (accepts, never answers) holds a probe for its
        # whole timeout, never the pass (an emergency edit is noticed within PREEMPT_POLL).
        self._probes = ThreadPoolExecutor(
            max_workers=max(1, min(16, len(self.owner))), thread_name_prefix="lbrec-probe"
        )

    def close(self) -> None:
        self._probes.shutdown(wait=False, cancel_futures=True)

    def inspect(self, pending: Sequence[str]) -> None:
        """Once a second: the instances' state; one that stopped or restarts has failed."""
        run = self.run
        now = run.hooks.clock()
        if now < self.next_inspect:
            return
        seen = run.docker.inspect(pending)
        run.know(seen)
        for c in seen:
            if (not c.running or c.state == "restarting") and c.id in self.owner:
                # a new instance that restarts has exited at least once: crash loop
                what = "exited and restarts" if c.running else c.state
                self.result[self.owner[c.id]] = (
                    f"instance {c.name or c.short_id} {what}: {run.docker.logs_tail(c.id)}"
                )
        self.next_inspect = now + 1.0

    def probe(self, pending: Sequence[str]) -> None:
        """Each instance's health path, from the host, at its published endpoint."""
        run = self.run
        timeout = run.desired.health.timeout
        asked: dict[str, Future[str | None]] = {}
        for cid in pending:
            name = self.owner[cid]
            if name in self.result:
                continue
            seen = run.seen(cid)
            if seen is None or seen.url is None:
                self.last[cid] = "no published port yet"
                self.healthy_since[cid] = None
                continue
            url = seen.url + self.groups[name][0].health_path(run.desired)
            asked[cid] = self._probes.submit(run.hooks.probe, url, timeout)
        waiting = set(asked.values())
        while waiting:
            _done, waiting = futures_wait(waiting, timeout=PREEMPT_POLL)
            if waiting:
                run.check_preempted()
        for cid, future in asked.items():
            problem = future.result()
            if problem is None:
                if self.healthy_since[cid] is None:
                    self.healthy_since[cid] = run.hooks.clock()
            else:
                self.last[cid] = problem
                self.healthy_since[cid] = None

    def decide_ready(self) -> None:
        """A backend is ready when all its instances were healthy for ``min_healthy`` s, and
        failed when its ``healthy_deadline`` passes first (naming the instance and why)."""
        now = self.run.hooks.clock()
        for name, (_spec, ids, min_healthy, deadline) in self.groups.items():
            if name in self.result:
                continue
            since = [self.healthy_since[cid] for cid in ids]
            if all(t is not None and now - t >= min_healthy for t in since):
                self.result[name] = None
            elif now - self.start >= deadline:
                self.result[name] = self._late(ids, min_healthy, deadline, now)

    def _late(self, ids: Sequence[str], min_healthy: float, deadline: float, now: float) -> str:
        def not_ready(cid: str) -> bool:
            t = self.healthy_since[cid]
            return t is None or now - t < min_healthy

        bad = next((cid for cid in ids if not_ready(cid)), ids[0])
        gone = self.run.seen(bad)
        what = gone.name if gone is not None and gone.name else bad[:12]
        answer = self.last.get(bad, "healthy, but not for min_healthy_time")
        return (
            f"instance {what} not healthy within {deadline:g}s (healthy_deadline): "
            f"{answer}; log: {self.run.docker.logs_tail(bad)}"
        )
