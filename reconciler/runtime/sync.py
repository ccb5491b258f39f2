"""EDGE. ``lbrec sync``: GitOps. Deploy the desired-state file of a git branch's head.

Each pass fetches the branch into a bare mirror (default ``.lbrec/repo`` in the deploy
folder), reads the file at the head commit (``git show <commit>:<path>``) and validates it. A
valid file is written atomically as the deploy folder's desired-state file and converged with
the commit as ``revision`` (stamped into backends.json and on new containers); a clean pass is
recorded in ``.lbrec/deployed.json`` for `lbrec status`. An invalid commit is reported once,
with its id and the validation error, and never applied: the last good commit keeps serving
(and keeps being reconciled, so drift is still repaired) until a later commit fixes it.

Only the desired-state file comes from git. The build context (Dockerfile.backend, backend/,
.dockerignore) is the deploy folder's own, like the binary a config-management tool runs:
a commit to the config repository can change *what runs* (backends, ports, weights, env) but
cannot change *how images are built*, so write access to that repository does not grant code
execution in the build, and an upgrade of the backend code is a separate, deliberate step.

For ``lbrec up``: :meth:`SyncLoop.start` runs the loop in a daemon thread (passes block on git
and docker); :meth:`SyncLoop.trigger` is thread-safe and non-blocking, for ``POST /-/sync``
(:mod:`reconciler.core.webhooks` judges each call).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from ...proxy.config import Revision
from ...proxy.logs import configure_logging
from ..adapters.audit import notify
from ..adapters.files import atomic_write
from ..adapters.git import Mirror, normalize_repo
from ..adapters.policy_files import enforce
from ..adapters.records import read_deployed, write_deployed
from ..adapters.workspace import Workspace
from ..core.errors import LbrecError, PolicyError, SpecError
from ..core.plan import Plan
from ..core.policy import DEFAULT_POLICY, Policy, load_policy
from ..core.redact import redact_url
from ..core.report import Report
from ..core.schedule import Backoff
from ..core.spec import DEFAULT_FILE, parse_spec
from .certs import attach_certificates
from .loop import ControlLoop, describe_failures
from .metrics import LOOP_METRICS, serve_metrics
from .options import RuntimeOptions
from .passes import DockerFactory, run_pass
from .signals import run_until_signal

__all__ = [
    "DeployFn",
    "SyncLoop",
    "SyncResult",
    "SyncSource",
    "SyncState",
    "build_sync_loop",
    "make_deploy",
    "run_sync",
]

# One deployment: (the commit's file, its revision, what to do under the lock after the pass)
# -> the report. The real one is run_pass (make_deploy); unit tests inject a fake.
DeployFn = Callable[[str, Revision, Callable[[Report], None]], Report]


@dataclass(frozen=True, slots=True)
class SyncSource:
    repo: str  # URL, or an absolute local path (see git.normalize_repo)
    branch: str = "main"
    path: str = DEFAULT_FILE  # of the desired-state file inside the repository


class SyncState(StrEnum):
    DEPLOYED = "deployed"  # the head commit is applied and every backend is up
    INVALID = "invalid"  # the head commit's file is invalid; nothing was applied
    REFUSED = "refused"  # the head commit is outside the operator's policy; nothing was applied
    FAILED = "failed"  # applied, but some backends failed to build, start or get healthy


@dataclass(frozen=True, slots=True)
class SyncResult:
    state: SyncState
    commit: str
    revision: Revision | None = None
    report: Report | None = None
    error: str | None = None
    recorded: bool = False  # this pass wrote deployed.json (a new commit went live)

    @property
    def exit_code(self) -> int:
        return {
            SyncState.DEPLOYED: 0,
            SyncState.FAILED: 1,
            SyncState.INVALID: 2,
            SyncState.REFUSED: PolicyError.exit_code,
        }[self.state]


class SyncLoop:
    """Deploys ``source``'s branch head into ``workspace``; ``deploy`` is one run_pass."""

    def __init__(
        self,
        source: SyncSource,
        workspace: Workspace,
        *,
        deploy: DeployFn,
        workdir: Path | None = None,
        interval: float = 30.0,
        git_timeout: float = 120.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: Policy = DEFAULT_POLICY,
        operator_notify: str | None = None,
    ) -> None:
        self.source = source
        self.policy = policy
        self.operator_notify = operator_notify
        self.workspace = workspace
        self._deploy_fn = deploy
        self.mirror = Mirror(source.repo, workdir or workspace.repo_mirror, timeout=git_timeout)
        self.loop = ControlLoop(
            self._pass,
            name="sync",
            resync=interval,
            debounce=0.0,
            backoff=backoff or Backoff(),
            retry_permanent_after=interval,  # a later commit may fix it: keep polling
            permanent_hint="waiting for the next commit",
            clock=clock,
            folder=workspace.folder,
            banner=f"syncing {redact_url(source.repo)} branch {source.branch} file "
            f"{source.path} into {workspace.spec_file} (every {interval:g}s)",
        )
        self._log = self.loop.logger
        self._reported_invalid: str | None = None
        self.head: str | None = None  # the head commit of the last fetch
        self.last_result: SyncResult | None = None

    # -- one pass -----------------------------------------------------------------------
    def sync_once(self) -> SyncResult:
        """Fetch, validate and apply the branch head. Raises LbrecError (GitError, ApplyError,
        DockerUnavailable, LockTimeout) when it cannot get that far; ``self.head`` then names
        the commit if the fetch succeeded."""
        self.head = None
        head = self.mirror.fetch(self.source.branch)
        self.head = head
        info = self.mirror.info(head)
        revision = Revision(
            commit=info.commit,
            author=info.author,
            message=info.message,
            time=info.time,
            source=redact_url(self.source.repo),  # shown and stored: never a credential
        )
        try:
            text = self._read(head)
        except PolicyError as err:
            result = SyncResult(SyncState.REFUSED, head, revision, error=err.message)
            if self._reported_invalid != head:
                self._reported_invalid = head
                self._refused(head, revision, err)
            self.last_result = result
            return result
        except SpecError as err:
            result = SyncResult(SyncState.INVALID, head, revision, error=err.message)
            if self._reported_invalid != head:
                self._reported_invalid = head
                serving = read_deployed(self.workspace.folder) or {}
                self._log.error(
                    "commit %s: invalid: %s; not applied; still serving %s",
                    head[:12],
                    err.message,
                    str(serving.get("commit") or "nothing")[:12],
                    extra={"event": "commit_invalid", "commit": head, "error": err.message},
                )
            self.last_result = result
            return result
        result = self._deploy(text, revision)
        self.last_result = result
        return result

    def _read(self, commit: str) -> str:
        """The file at ``commit``, validated (SpecError when it is not valid)."""
        path = self.source.path
        text = self.mirror.show(commit, path)
        if text is None:
            raise SpecError(
                f"{path}: not in commit {commit[:12]}",
                hint="check --path (the file's path inside the repository)",
            )
        source = f"{path}@{commit[:12]}"
        desired = parse_spec(text, source=source)
        enforce(desired, self.policy, self.workspace.folder, source=source)
        return text

    def _refused(self, commit: str, revision: Revision, err: PolicyError) -> None:
        """Once per refused head: logged, counted by rule, and told to the operator's
        receiver (never to the commit's own notify: the commit is what was refused)."""
        serving = str((read_deployed(self.workspace.folder) or {}).get("commit") or "nothing")
        self._log.error(
            "commit %s: refused by the policy: %s; not applied; still serving %s",
            commit[:12],
            err.message,
            serving[:12],
            extra={"event": "commit_refused", "commit": commit, "error": err.message},
        )
        for rule in err.rules or ("policy",):
            LOOP_METRICS.refused.labels(self.loop.name, rule).inc()
        if self.operator_notify:
            record = {
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": "lbrec sync",
                "outcome": "refused",
                "revision": revision.model_dump(mode="json"),
                "serving": serving,
                "error": err.message,
                "rules": list(err.rules),
            }
            notify(self.operator_notify, record, timeout=5.0)

    def _deploy(self, text: str, revision: Revision) -> SyncResult:
        commit = revision.commit or ""
        folder = self.workspace.folder
        recorded = False

        def record(report: Report) -> None:  # under the lock, after a clean pass
            nonlocal recorded
            if report.failed or report.preempted:  # cut short: not live yet
                return
            deployed = read_deployed(folder) or {}
            recorded = deployed.get("commit") != commit
            if recorded:
                write_deployed(folder, revision, branch=self.source.branch, path=self.source.path)
                self._log.info(
                    "commit %s: deployed (%s: %s)",
                    commit[:12],
                    revision.author,
                    revision.message,
                    extra={"event": "commit_deployed", "commit": commit, "author": revision.author},
                )

        report = self._deploy_fn(text, revision, record)
        if report.failed or report.preempted:
            error = describe_failures(report) or "; ".join(
                o.error or "preempted" for o in report.cut_short
            )
            return SyncResult(SyncState.FAILED, commit, revision, report, error)
        return SyncResult(SyncState.DEPLOYED, commit, revision, report, recorded=recorded)

    def _last_good(self) -> tuple[str, Revision] | None:
        deployed = read_deployed(self.workspace.folder) or {}
        commit = deployed.get("commit")
        if not isinstance(commit, str) or not self.mirror.has(commit):
            return None
        try:
            text = self._read(commit)
        except SpecError:
            return None
        fields = {k: deployed.get(k) for k in ("commit", "author", "message", "time", "source")}
        return text, Revision.model_validate(fields)

    def _pass(self) -> Report:
        """The loop's level-triggered pass; an invalid head re-converges the last good commit."""
        result = self.sync_once()
        if result.report is not None:
            return result.report
        good = self._last_good()
        if good is None:
            raise SpecError(f"commit {result.commit[:12]}: {result.error}")
        text, revision = good
        deployed = self._deploy(text, revision)
        assert deployed.report is not None  # _deploy always applies
        return deployed.report

    # -- the loop -----------------------------------------------------------------------
    def trigger(self) -> None:
        """Fetch and deploy now (webhook). Thread-safe; returns at once."""
        self.loop.notify("trigger", immediate=True)

    def run(self) -> None:
        self.loop.run()

    def start(self) -> threading.Thread:
        return self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def join(self, timeout: float | None = None) -> bool:
        return self.loop.join(timeout)


def make_deploy(workspace: Workspace, docker: DockerFactory, options: RuntimeOptions) -> DeployFn:
    """The real deployment: one run_pass that first writes the commit's file (atomically,
    under the lock) and stamps ``revision`` into the pool and on new containers."""

    def deploy(text: str, revision: Revision, after: Callable[[Report], None]) -> Report:
        def write_file(_held: object) -> None:
            atomic_write(workspace.spec_file, text, private=True)  # a new one: 0640 (env secrets)

        return run_pass(
            workspace,
            docker,
            command="lbrec sync",
            lock_timeout=options.lock_timeout,
            health_timeout=options.health_timeout,
            prepare=write_file,
            after=after,
            revision=revision,
            on_plan=lambda p: _log_plan(p, revision),
        )

    return deploy


def _log_plan(the_plan: Plan, revision: Revision) -> None:
    log = logging.getLogger("lbrec.sync")
    for action in the_plan.changes:
        log.info(
            "commit %s: %s %s: %s",
            (revision.commit or "?")[:12],
            action.kind.value,
            action.backend,
            action.reason or "-",
            extra={"event": "plan_change", "commit": revision.commit, "action": action.kind.value},
        )


def build_sync_loop(
    options: RuntimeOptions, docker: DockerFactory, *, deploy: DeployFn | None = None
) -> SyncLoop:
    """The real sync loop (for run_sync and `lbrec up --repo`). Raises GitError for a bad
    --repo, SpecError when the deploy folder (the folder of the file) does not exist."""
    if options.repo is None:
        raise SpecError("--repo: required to follow a git branch")
    workspace = Workspace.at(options.file)
    if not workspace.folder.is_dir():
        raise SpecError(f"{workspace.folder}: no such deploy folder")
    source = SyncSource(normalize_repo(options.repo, Path.cwd()), options.branch, options.path)
    sync = SyncLoop(
        source,
        workspace,
        deploy=deploy or make_deploy(workspace, docker, options),
        workdir=options.workdir,
        interval=options.interval,
        git_timeout=options.git_timeout,
        policy=load_policy(options.policy) if options.policy is not None else DEFAULT_POLICY,
        operator_notify=options.notify,
    )
    attach_certificates(sync.loop, workspace)  # ACME orders and renewals, beside the loop
    return sync


def run_sync(
    options: RuntimeOptions, docker: DockerFactory, *, deploy: DeployFn | None = None
) -> int:
    """`lbrec sync`. With ``once``: the exit code of the deployment of the head commit;
    otherwise runs until SIGINT/SIGTERM (0 on a clean stop, 130 when forced)."""
    log = configure_logging(options.log_format, name="sync")
    try:
        sync = build_sync_loop(options, docker, deploy=deploy)
    except LbrecError as err:
        log.error("%s", err.message)
        return err.exit_code
    if options.once:
        return _once(sync, log_error=log.error, log_info=log.info)
    if not serve_metrics(options.metrics, log):
        return 2
    return run_until_signal(sync, log)


def _once(sync: SyncLoop, *, log_error: Callable[..., None], log_info: Callable[..., None]) -> int:
    try:
        result = sync.sync_once()
    except LbrecError as err:
        where = f"commit {sync.head[:12]}: " if sync.head else ""
        log_error("%s%s: %s", where, type(err).__name__, err.message)
        if err.hint:
            log_error("  hint: %s", err.hint)
        return err.exit_code
    short = result.commit[:12]
    match result.state:  # a new deployment, an invalid or refused commit: logged by sync_once
        case SyncState.DEPLOYED if not result.recorded:
            log_info("commit %s: deployed, in sync", short)
        case SyncState.FAILED:
            log_error("commit %s: apply failed: %s", short, result.error)
    return result.exit_code
