"""A fake Docker port for unit tests of apply/converge and the CLI (no engine needed).

Containers live in a dict by id; ``scale`` creates instances the way Compose does (new ones
from the current desired state, beside the others, each on its own host port), and every call
is recorded with the pool URLs routed at that moment, so tests can assert make before break.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.canary import Counters
from lbrec.reconciler.core.errors import ApplyError
from lbrec.reconciler.core.labels import backend_labels
from lbrec.reconciler.core.ports import BuiltImage, DockerPort
from lbrec.reconciler.core.spec import DesiredState
from lbrec.reconciler.core.state import ObservedContainer
from lbrec.reconciler.engine.hooks import Hooks

REPO = Path(__file__).resolve().parents[2]
TWO = "backends:\n  - {name: a, port: 9101, weight: 1}\n  - {name: b, port: 9102, weight: 2}\n"
FAST = "rollout: {min_healthy_time: 0, healthy_deadline: 1s, drain_timeout: 1s}\n"


@dataclass
class FakeDocker:
    """Records every call with the pool routed at that moment."""

    workspace: Workspace
    desired: DesiredState
    fail_build: bool = False
    fail_pull: bool = False
    unhealthy: set[str] = field(default_factory=set)  # backends whose new instances fail
    exits: set[str] = field(default_factory=set)  # backends whose new instances exit
    crashloop: set[str] = field(default_factory=set)  # ... exit and are restarted by Docker
    containers: dict[str, ObservedContainer] = field(default_factory=dict)
    calls: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    counter: int = 0
    broken_urls: set[str] = field(default_factory=set)
    bad_answers: set[str] = field(default_factory=set)  # new instances answer 500 to a third
    bad_urls: set[str] = field(default_factory=set)

    def _routed(self) -> tuple[str, ...]:
        """Backend names in the pool now (one per instance, sorted as written)."""
        path = self.workspace.pool_file
        if not path.exists():
            return ()
        return tuple(b["name"] for b in json.loads(path.read_text())["backends"])

    def routed_urls(self) -> set[str]:
        path = self.workspace.pool_file
        if not path.exists():
            return set()
        return {b["url"] for b in json.loads(path.read_text())["backends"]}

    def _record(self, what: str, names: Sequence[str]) -> None:
        self.calls.append((what, tuple(names), self._routed()))

    def of(self, backend: str) -> list[ObservedContainer]:
        return [c for c in self.containers.values() if c.backend == backend]

    def check(self) -> None:
        pass

    def has_image(self, tag: str) -> bool:
        return tag in self.images

    def observe(self) -> tuple[ObservedContainer, ...]:
        return tuple(sorted(self.containers.values(), key=lambda c: (c.backend, c.id)))

    def inspect(self, container_ids: Sequence[str]) -> tuple[ObservedContainer, ...]:
        return tuple(self.containers[i] for i in container_ids if i in self.containers)

    def logs_tail(self, container_id: str) -> str:
        return "Traceback: boom"

    def build(self, services: Sequence[str], *, progress: object = None) -> None:
        self._record("build", services)
        if self.fail_build:
            raise ApplyError("building failed: no such image", detail="tail of docker's error")

    def pull(self, image: str) -> None:
        self._record("pull", (image,))
        if self.fail_pull:
            raise ApplyError(f"pulling {image} failed: not found", detail="manifest unknown")
        self.images.add(image)

    def _new(self, name: str, number: int) -> ObservedContainer:
        spec = self.desired.backend(name)
        assert spec is not None
        build = self.workspace.build_info(self.desired)
        self.counter += 1
        cid = f"{name}-{self.counter}"
        port = 40000 + self.counter
        url = f"http://127.0.0.1:{port}"
        if name in self.unhealthy:
            self.broken_urls.add(url)
        if name in self.bad_answers:
            self.bad_urls.add(url)
        return ObservedContainer(
            id=cid,
            backend=name,
            state="exited"
            if name in self.exits
            else "restarting"
            if name in self.crashloop
            else "running",
            health="starting",
            labels=backend_labels(spec, self.desired, build),
            name=f"p-{name}-{number}",
            endpoint=None if name in self.exits else f"127.0.0.1:{port}",
        )

    def scale(self, counts: Mapping[str, int]) -> None:
        for service, count in sorted(counts.items()):
            self._record("scale", (service, str(count)))
            existing = self.of(service)
            for number in range(len(existing) + 1, count + 1):
                c = self._new(service, number)
                self.containers[c.id] = c

    def up(self, services: Sequence[str], *, force_recreate: bool) -> None:
        self._record("up", services)

    def start(self, container_ids: Sequence[str]) -> None:
        self._record("start", container_ids)
        for cid in container_ids:
            c = self.containers[cid]
            port = (
                40000 + int(cid.rsplit("-", 1)[-1]) if cid.rsplit("-", 1)[-1].isdigit() else 49999
            )
            self.containers[cid] = ObservedContainer(
                id=c.id,
                backend=c.backend,
                state="running",
                health="healthy",
                labels=c.labels,
                name=c.name,
                endpoint=c.endpoint or f"127.0.0.1:{port}",
            )

    def remove(self, container_ids: Sequence[str]) -> None:
        self._record("remove", container_ids)
        for cid in container_ids:
            self.containers.pop(cid, None)

    def discard(self, container_ids: Sequence[str]) -> None:
        self.stop_remove(container_ids)

    def stop_remove(self, container_ids: Sequence[str]) -> None:
        self._record("stop_remove", container_ids)
        for cid in container_ids:
            self.containers.pop(cid, None)

    def built_images(self) -> tuple[BuiltImage, ...]:
        return ()

    def remove_image(self, reference: str) -> None:
        self._record("remove_image", (reference,))

    def remove_network(self) -> None:
        self._record("remove_network", ())

    def wait_healthy(
        self, services: Sequence[str], *, timeout: float, ready: object = None
    ) -> dict[str, str | None]:
        self._record("wait", services)
        return {n: ("not healthy after 1s" if n in self.unhealthy else None) for n in services}

    def probe(self, url: str, timeout: float) -> str | None:
        base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
        if any(url.startswith(b) for b in self.broken_urls):
            return f"GET {url} answered 500"
        del base, timeout
        return None

    def hooks(self, confirmed: list[str] | None = None, *, parallel: bool = False) -> Hooks:
        """Proxy and clock stand-ins: every generation is confirmed, nothing in flight, and
        time advances 0.2 s per sleep (so deadlines pass without waiting)."""
        now = [0.0]

        lock = threading.Lock()

        def sleep(seconds: float) -> None:
            with lock:
                now[0] += seconds

        def confirm(generation: str) -> bool:
            self._record("confirm", (generation,))
            if confirmed is not None:
                confirmed.append(generation)
            return True

        def drained(urls: object, timeout: float) -> int:
            self._record("drain", tuple(sorted(str(u) for u in urls)))  # type: ignore[attr-defined]
            return 0

        def counters(urls: object) -> Counters:
            """Each instance answers 50 requests a second of the fake clock (a third 5xx on
            a bad one), so a step's window is what its length and the instance make it."""
            total = Counters()
            for url in urls:  # type: ignore[attr-defined]
                n = int(now[0] * 50)
                bad = n // 3 if url in self.bad_urls else 0
                status = [0, 0, n - bad, 0, 0, bad]
                latency = [0] * 27
                latency[5] = n
                total = total + Counters(n, bad, tuple(status), tuple(latency))
            return total

        return Hooks(
            counters=counters,
            confirm=confirm,
            drained=drained,
            probe=self.probe,
            sleep=sleep,
            clock=lambda: now[0],
            parallel=parallel,
        )


def make_folder(tmp_path: Path) -> Path:
    """A deploy folder with the build context lbrec needs."""
    for name in ("Dockerfile.backend",):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend/app.py").write_bytes((REPO / "backend/app.py").read_bytes())
    return tmp_path


def as_port(fake: FakeDocker) -> DockerPort:
    """Where mypy checks the fake against the port it stands in for (mypy runs over tests/)."""
    return fake
