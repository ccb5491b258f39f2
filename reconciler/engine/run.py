"""One pass's mutable state and its primitive moves: route, retire, wait until ready."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from ...proxy.config import Revision
from ..core.certs import HeldCertificate
from ..core.labels import BuildInfo
from ..core.ports import DockerPort, Progress, WorkspacePort
from ..core.render import Instance, render_pool
from ..core.spec import BackendSpec, DesiredState
from ..core.state import ObservedContainer
from .hooks import Hooks, Preempted

# How often a wait on health probes looks for a newer change (an edit waiting for the lock).
PREEMPT_POLL = 0.05


@dataclass
class Run:
    """The mutable state of one apply: which instances the pool routes to, and the outcomes."""

    desired: DesiredState
    workspace: WorkspacePort
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
    # The engine's epoch when this pass observed it (adapters/engine_epoch.py): once the
    # engine has gone away since, every pool this pass writes is frozen (its ports are stale).
    epoch: int | None = None
    # The certificates obtained over ACME (Observed.certificates): the pool lists them.
    certificates: tuple[HeldCertificate, ...] = ()

    def wrote(self, path: str | None) -> None:
        """A file this pass changed (None: it was unchanged), for the report."""
        if path is not None:
            self.written.append(path)

    def route(self, backend: str, ids: Sequence[str]) -> None:
        """Add instances to the pool and publish it (the proxy confirms)."""
        with self.lock:
            for cid in ids:
                c = self.known[cid]
                assert c.url is not None
                self.forget_url(c.url, keep=cid)
                self.routed.setdefault(backend, {})[cid] = (c.url, c.name or None)
            self.publish()

    def forget_url(self, url: str, *, keep: str) -> None:
        """One URL is one container: an entry of another container at ``url`` (its port read
        before an engine restart handed it to ``keep``) leaves the pool."""
        for by_id in self.routed.values():
            for cid in [i for i, (u, _name) in by_id.items() if u == url and i != keep]:
                del by_id[cid]

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
                    entries.append((url, inst, None, None, cid))
                elif cid in canary:
                    entries.append((url, inst, "canary", percent, cid))
                else:
                    entries.append((url, inst, "stable", 100 - percent, cid))
            instances[name] = entries
        # A canary's split: its sticky hash is keyed from the host's secret (docs/security.md)
        secret = self.workspace.sticky_secret() if self.split else b""
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
        wait = _HealthWait(self, groups)
        try:
            while len(wait.result) < len(groups):
                self.check_preempted()
                pending = [cid for cid in wait.owner if wait.owner[cid] not in wait.result]
                wait.inspect(pending)
                wait.probe(pending)
                wait.judge()
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
        for c in run.docker.inspect(pending):
            run.known[c.id] = c
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
            seen = run.known.get(cid)
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

    def judge(self) -> None:
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
        gone = self.run.known.get(bad)
        what = gone.name if gone is not None and gone.name else bad[:12]
        answer = self.last.get(bad, "healthy, but not for min_healthy_time")
        return (
            f"instance {what} not healthy within {deadline:g}s (healthy_deadline): "
            f"{answer}; log: {self.run.docker.logs_tail(bad)}"
        )
