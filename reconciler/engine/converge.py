"""One level-triggered pass: load, observe, plan, and (unless check mode) apply."""

from __future__ import annotations

from collections.abc import Callable, Collection

from ...proxy.config import Revision
from ..adapters import engine_epoch
from ..adapters.files import read_text_or_none
from ..adapters.lock import waiting_editor
from ..adapters.repair_records import RepairFiles
from ..adapters.proxy_admin import pool_document, wait_drained, wait_for_generation
from ..adapters.workspace import Workspace
from ..core.canary import Counters, counters_of
from ..core.labels import BuildInfo, config_hash
from ..core.plan import Plan, plan
from ..core.ports import DockerPort, Progress
from ..core.render import converged_pool, render_compose
from ..core.report import Report
from ..core.spec import DesiredState
from ..core.state import Observed
from .apply import apply, container_revisions
from .hooks import Hooks
from .rollout_control import (
    rolled_back,
)


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
    # Before the engine is observed: a break of its events stream after this makes the pass
    # stale (its ports may be another container's): it writes frozen pools and yields.
    epoch = engine_epoch.current(workspace.folder)
    if hooks is None:
        preempted = _preemption(workspace, epoch)
        hooks = Hooks(
            confirm=confirm,
            drained=lambda urls, timeout: wait_drained(
                admin, urls, timeout=timeout, cancel=preempted
            ),
            preempted=preempted,
            counters=lambda urls: _proxy_counters(admin, urls),
            records=RepairFiles(workspace.folder),
        )
    build = workspace.build_info(desired, stage=not check)  # check mode only reads
    docker.check()
    observed = workspace.observe(docker.observe())
    if revision is None and observed.pool is not None:
        # A plain apply after `lbrec sync` keeps the deployed commit in backends.json.
        revision = observed.pool.revision
    revisions = _container_revisions_for_plan(desired, observed, build, revision)
    target = converged_pool(desired, observed, build, revision, source=str(workspace.spec_file))
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
        epoch=epoch,
        crash_loops=hold_rolled_back,
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


def _preemption(workspace: Workspace, epoch: int) -> Callable[[], str | None]:
    """Why a pass over ``workspace`` should yield: an edit command waits for the lock, the
    desired-state file no longer holds what this pass read, or the engine went away since
    this pass observed it (the reconnect pass re-reads every port)."""
    spec_file = workspace.spec_file
    seen = read_text_or_none(spec_file)

    def preempted() -> str | None:
        if engine_epoch.current(workspace.folder) != epoch:
            return "the engine went away; a pass re-reads every container when it is back"
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
    return container_revisions(preliminary, observed, revision)
