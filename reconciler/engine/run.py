"""One pass's mutable state and its primitive moves: route, retire, wait until ready."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from proxy.config import Revision

from ..adapters.files import atomic_write
from ..adapters.workspace import Workspace
from ..core.labels import BuildInfo
from ..core.ports import DockerPort, Progress
from ..core.render import Instance, render_pool
from ..core.spec import BackendSpec, DesiredState
from ..core.state import ObservedContainer
from .hooks import Hooks, Preempted


@dataclass
class Run:
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
