"""EDGE orchestration: carry out a plan, make before break, and report what happened.

Order: write docker-compose.yml; route away from backends that go (pool before container);
remove their containers; build once; start or create containers; wait for their health check;
then route to every backend that is up (container before pool). A backend that fails is left
out of backends.json and named in the report; the next apply converges.
"""

from __future__ import annotations

import errno
import socket
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.config import Revision

from .docker import DockerPort
from .errors import ApplyError, PortInUse
from .files import atomic_write
from .labels import BuildInfo
from .plan import Action, ActionKind, Plan, plan
from .proxy_admin import wait_for_generation
from .render import backend_url, image_tag, render_compose, render_pool
from .spec import DesiredState
from .state import Observed
from .workspace import Workspace

__all__ = ["Outcome", "Report", "apply", "check_ports", "converge", "port_free", "preflight"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    ok: bool
    error: str | None = None
    detail: str = ""


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
    def changed(self) -> bool:
        return not self.plan.in_sync

    def recap(self) -> dict[str, int]:
        kinds = [a.kind for a in self.plan.actions]
        failed = {o.action.backend for o in self.failed}
        return {
            "ok": sum(1 for a in self.plan.actions if a.backend not in failed),
            "changed": sum(
                1
                for a in self.plan.changes
                if a.kind is not ActionKind.REMOVE and a.backend not in failed
            ),
            "unchanged": kinds.count(ActionKind.UNCHANGED),
            "removed": sum(1 for a in self.plan.of(ActionKind.REMOVE) if a.backend not in failed),
            "failed": len(failed),
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


def _answers(desired: DesiredState, name: str) -> bool:
    """The backend's health path answers 200 on its published port (probed from the host)."""
    backend = desired.backend(name)
    if backend is None:
        return False
    url = backend_url(desired, backend) + desired.health.path
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def check_ports(desired: DesiredState, the_plan: Plan | None, observed: Observed) -> None:
    """Fail before touching anything when a port to publish is taken by someone else.

    Without a plan (the preflight of `lbrec add`/`init`, before the file is written) every
    backend whose port none of our containers publishes is checked.
    """
    ours = {int(p) for c in observed.containers if (p := c.labels.get("lbrec.field.port"))}
    for index, backend in enumerate(desired.backends):
        if the_plan is not None:
            action = next(a for a in the_plan.actions if a.backend == backend.name)
            if action.kind not in (ActionKind.CREATE, ActionKind.RECREATE, ActionKind.START):
                continue
        if backend.port in ours:
            continue
        if not port_free(desired.publish_host, backend.port):
            raise PortInUse(
                f"backends[{index}].port: {backend.port} is already in use on "
                f"{desired.publish_host} by another process; nothing was changed",
                hint="choose a free port, or stop what listens there",
            )


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
    confirm: Callable[[str], bool | None] | None = None,
) -> Report:
    """Carry out ``the_plan``. ``confirm(generation)`` waits until the running proxy serves a
    pool generation (None: no proxy answers); it is called before containers are removed."""
    say = progress or (lambda _msg: None)
    check_ports(desired, the_plan, observed)
    written: list[str] = []
    outcomes: dict[str, Outcome] = {}

    def write_pool(routed: Iterable[str]) -> str:
        config = render_pool(desired, routed=set(routed), revision=revision)
        if atomic_write(workspace.pool_file, config.to_json()):
            written.append(str(workspace.pool_file))
        return config.generation

    def drain(generation: str) -> None:
        """Before a container goes: wait until the proxy no longer routes to it."""
        if confirm is None:
            return
        result = confirm(generation)
        if result is False:
            say(f"the proxy at {desired.admin} did not confirm generation {generation}; going on")

    revisions = _container_revisions(the_plan, observed, revision)
    compose = render_compose(desired, build, source=workspace.spec_file.name, revisions=revisions)
    if atomic_write(workspace.compose_file, compose):
        written.append(str(workspace.compose_file))

    def of(*kinds: ActionKind) -> tuple[Action, ...]:
        return tuple(a for a in the_plan.of(*kinds) if a.role == "backend")

    # 1. Pool first: route only to containers that serve now, not to what goes (pool before
    # container), stopped ones, or new ones. A backend to replace keeps serving from its old
    # container until the new image is built, but only where it is routed already and at the
    # same URL (a new port is not up yet).
    going = of(ActionKind.REMOVE)
    keep = {a.backend for a in of(ActionKind.UNCHANGED, ActionKind.REWEIGHT, ActionKind.RECREATE)}
    routed_urls = {e.name: e.url for e in observed.pool.backends} if observed.pool else {}
    for action in of(ActionKind.RECREATE):
        spec = desired.backend(action.backend)
        if spec is None or routed_urls.get(action.backend) != backend_url(desired, spec):
            keep.discard(action.backend)
    generation = write_pool(keep)
    if going:
        drain(generation)
    for action in of(ActionKind.REWEIGHT):
        outcomes[action.backend] = Outcome(action, ok=True)

    # 2. Containers that go.
    for action in going:
        try:
            docker.remove(action.container_ids)
            say(f"{action.backend}: removed")
            outcomes[action.backend] = Outcome(action, ok=True)
        except ApplyError as err:
            outcomes[action.backend] = Outcome(
                action, ok=False, error=err.message, detail=err.detail
            )

    # 3. Containers that come: build once; a failed build leaves the old containers serving.
    fresh = of(ActionKind.CREATE, ActionKind.RECREATE)
    started: list[Action] = []
    if fresh and not docker.has_image(image_tag(desired, build)):
        try:
            say(f"building the backend image ({', '.join(a.backend for a in fresh)})")
            docker.build([fresh[0].backend], progress=progress)
        except ApplyError as err:
            for action in fresh:
                outcomes[action.backend] = Outcome(
                    action, ok=False, error=err.message, detail=err.detail
                )
            fresh = ()
    replaced = {a.backend for a in fresh if a.kind is ActionKind.RECREATE}
    if replaced & keep:  # drain what is about to be replaced
        keep -= replaced
        generation = write_pool(keep)
        drain(generation)
    for action in fresh:
        try:
            if action.kind is ActionKind.RECREATE:
                docker.remove(action.container_ids)
            docker.up([action.backend], force_recreate=False)
            started.append(action)
        except ApplyError as err:
            outcomes[action.backend] = Outcome(
                action, ok=False, error=err.message, detail=err.detail
            )
    for action in of(ActionKind.START):
        try:
            docker.start(action.container_ids)
            started.append(action)
        except ApplyError as err:
            outcomes[action.backend] = Outcome(
                action, ok=False, error=err.message, detail=err.detail
            )
    if started:
        say(f"waiting for health: {', '.join(a.backend for a in started)}")
        health = docker.wait_healthy(
            [a.backend for a in started],
            timeout=health_timeout,
            ready=lambda name: _answers(desired, name),
        )
        for action in started:
            problem = health.get(action.backend)
            if problem is None:
                keep.add(action.backend)
                outcomes[action.backend] = Outcome(action, ok=True)
                say(f"{action.backend}: healthy")
            else:
                outcomes[action.backend] = Outcome(
                    action, ok=False, error=f"{action.backend}: {problem}"
                )

    # 4. Pool last for what came: route only to backends that answer.
    generation = write_pool(keep)

    # 5. The load balancer's own container (proxy.mode: container) reads that pool at start.
    for action in the_plan.actions:
        if action.role == "lb" and action.kind is not ActionKind.UNCHANGED:
            outcomes["lb"] = _converge_lb(action, docker, say, progress, health_timeout)
    ordered = tuple(outcomes[a.backend] for a in the_plan.changes if a.backend in outcomes)
    return Report(
        plan=the_plan,
        check=False,
        outcomes=ordered,
        files_written=tuple(written),
        routed=tuple(sorted(keep)),
        generation=generation,
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
        if action.kind in (ActionKind.CREATE, ActionKind.RECREATE):
            if revision is not None and revision.commit:
                out[action.backend] = revision.commit
        else:
            for c in observed.for_backend(action.backend):
                if stamp := c.labels.get("lbrec.revision"):
                    out[action.backend] = stamp
    return out


def preflight(workspace: Workspace, docker: DockerPort, desired: DesiredState) -> None:
    """The checks of an apply that can fail before anything changes (engine reachable, ports
    free), run by `lbrec init/add/remove` before the edited file is written."""
    docker.check()
    check_ports(desired, None, workspace.observe(docker.observe()))


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
) -> Report:
    """One level-triggered pass: load, observe, plan, and (unless ``check``) apply."""
    desired = desired if desired is not None else workspace.load()
    if confirm is None:  # make before break against the proxy serving this desired state
        admin = desired.admin
        confirm = lambda generation: wait_for_generation(admin, generation)  # noqa: E731
    build = workspace.build_info(desired, stage=not check)  # check mode only reads
    docker.check()
    observed = workspace.observe(docker.observe())
    if revision is None and observed.pool is not None:
        # A plain apply after `lbrec sync` keeps the deployed commit in backends.json.
        revision = observed.pool.revision
    revisions = _container_revisions_for_plan(desired, observed, build, revision)
    target = render_pool(desired, revision=revision)
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
        confirm=confirm,
    )


def _container_revisions_for_plan(
    desired: DesiredState, observed: Observed, build: BuildInfo, revision: Revision | None
) -> dict[str, str]:
    preliminary = plan(desired, observed, build=build)
    return _container_revisions(preliminary, observed, revision)
