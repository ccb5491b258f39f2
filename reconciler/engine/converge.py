"""One level-triggered pass: load, observe, plan, and (unless check mode) apply."""

from __future__ import annotations

from collections.abc import Callable, Collection

from ...proxy.config import Revision
from ..core.engines.auto import render_deploy_file
from ..core.labels import BuildInfo, config_hash
from ..core.plan import Plan, plan, with_files
from ..core.ports import DockerPort, Progress, WorkspacePort
from ..core.render import converged_pool
from ..core.report import Report
from ..core.spec import DesiredState
from .apply import apply, container_revisions
from .hooks import Hooks


def preflight(workspace: WorkspacePort, docker: DockerPort, desired: DesiredState) -> None:
    """The checks of an apply that can fail before anything changes (the engine answers),
    run by `lbrec init/add/remove` before the edited file is written. Backend ports cannot be
    taken: Docker allocates each instance's host port."""
    del workspace, desired
    docker.check()


def converge(
    workspace: WorkspacePort,
    docker: DockerPort,
    *,
    desired: DesiredState | None = None,
    check: bool,
    revision: Revision | None = None,
    progress: Progress | None = None,
    health_timeout: float = 60.0,
    on_plan: Callable[[Plan], None] | None = None,
    hooks: Hooks | None = None,
    epoch: int | None = None,
    only: Collection[str] | None = None,
    hold_rolled_back: bool = False,
) -> Report:
    """One level-triggered pass: load, observe, plan, and (unless ``check``) apply.

    ``hooks``: the proxy, the probe and the clock (runtime/passes.py builds the real ones;
    without them nothing is confirmed or probed, which only check mode can do without).
    ``epoch``: the engine's epoch read before the hooks were built (else read here), before
    the engine is observed: a break of its events stream after this makes the pass stale
    (its ports may be another container's): it writes frozen pools and yields."""
    desired = desired if desired is not None else workspace.load()
    epoch = workspace.epoch() if epoch is None else epoch
    hooks = hooks if hooks is not None else Hooks()
    build = workspace.build_info(desired, stage=not check)  # check mode only reads
    docker.check()
    observed = workspace.observe(docker.observe())
    if revision is None and observed.pool is not None:
        # A plain apply after `lbrec sync` keeps the deployed commit in backends.json.
        revision = observed.pool.revision
    # Planned once; the deploy file is rendered once, from the plan (the commit stamped on
    # what it creates), and the plan then says whether that file and the pool change.
    the_plan = plan(desired, observed, build=build)
    revisions = container_revisions(the_plan, observed, revision)
    target = converged_pool(desired, observed, build, revision, source=str(workspace.spec_file))
    compose = render_deploy_file(
        desired, build, source=workspace.spec_file.name, revisions=revisions
    )
    the_plan = with_files(the_plan, observed, target_pool=target, compose_text=compose)
    if check:
        return Report(plan=the_plan, check=True, generation=target.generation)
    if on_plan is not None:
        on_plan(the_plan)
    return apply(
        desired,
        observed,
        the_plan,
        deploy_file=compose,
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


def _held(workspace: WorkspacePort, desired: DesiredState, build: BuildInfo) -> dict[str, str]:
    """Backends whose desired version is one that was rolled back: a loop does not roll it
    out again (a tight loop of the same failure) until the file or the commit changes it."""
    out: dict[str, str] = {}
    for name, entry in workspace.rollouts.rolled_back().items():
        spec = desired.backend(name)
        if spec is not None and config_hash(spec, desired, build) == entry.get("hash"):
            out[name] = (
                f"held: this version was rolled back ({entry.get('reason', '')}); a change of "
                "it retries, or `lbrec apply` by hand"
            )
    return out
