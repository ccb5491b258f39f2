"""One real pass, the only one: take the project lock, load, converge.

Every command that changes something runs it: `lbrec apply` and the edit commands (with
``prepare`` editing the file under the same lock), each pass of `lbrec watch` and of `lbrec up`,
and each deployment of `lbrec sync` (``prepare`` writes the commit's file, ``after`` records it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection
from typing import Any

from ...proxy.config import Revision
from ..adapters import probes
from ..adapters.audit import append_record, notify
from ..adapters.files import read_text_or_none
from ..adapters.lock import Held, project_lock, waiting_editor
from ..adapters.proxy_admin import pool_document, wait_drained, wait_for_generation
from ..adapters.repair_records import RepairFiles
from ..adapters.workspace import Workspace
from ..core.audit import failure_record, pass_record
from ..core.canary import Counters, counters_of
from ..core.errors import LbrecError, LockTimeout
from ..core.plan import Plan
from ..core.ports import DockerPort, Preemption, Progress
from ..core.report import Report
from ..core.spec import DesiredState
from ..engine.converge import converge
from ..engine.hooks import Hooks

__all__ = ["DockerFactory", "proxy_hooks", "run_pass"]

DockerFactory = Callable[[Workspace, DesiredState], DockerPort]


def run_pass(
    workspace: Workspace,
    docker: DockerFactory,
    *,
    command: str,
    lock_timeout: float,
    health_timeout: float,
    on_wait: Callable[[str], None] | None = None,
    preempt: bool = False,
    announced: bool = False,
    prepare: Callable[[Held], Collection[str] | None] | None = None,
    after: Callable[[Report], None] | None = None,
    revision: Revision | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    progress: Progress | None = None,
    hold_rolled_back: bool = True,
) -> Report:
    """Under the project lock: ``prepare`` (it may return the only backends to change), load
    the file, converge, then ``after`` with the report, still under the lock.

    ``hold_rolled_back``: a version that was rolled back is not tried again until the file
    changes (the loops); a one-shot `lbrec apply` tries again, since a person asked.

    Every pass is recorded in the audit log (`lbrec status --history`) and, when the file has
    a ``notify:`` webhook and the outcome is one it asked for, sent to it."""
    started = time.time()
    desired: DesiredState | None = None
    try:
        with project_lock(
            workspace.folder,
            command=command,
            timeout=lock_timeout,
            on_wait=on_wait,
            preempt=preempt,
            announced=announced,
        ) as held:
            only = prepare(held) if prepare is not None else None
            desired = workspace.load()
            # Before the engine is observed (see converge): the epoch the hooks compare with.
            epoch = workspace.epoch()
            report = converge(
                workspace,
                docker(workspace, desired),
                desired=desired,
                check=False,
                hooks=proxy_hooks(workspace, desired, epoch),
                epoch=epoch,
                revision=revision,
                progress=progress,
                health_timeout=health_timeout,
                on_plan=on_plan,
                only=only,
                hold_rolled_back=hold_rolled_back,
            )
            if after is not None:
                after(report)
            record = pass_record(
                report, command=command, started=started, ended=time.time(), revision=revision
            )
            append_record(workspace.folder, record)
    except LbrecError as err:
        failed = failure_record(
            err.message,
            kind=type(err).__name__,
            command=command,
            started=started,
            ended=time.time(),
        )
        if not isinstance(err, LockTimeout):  # another command holds the folder: not ours
            with contextlib.suppress(OSError):  # no folder: the error itself says so
                append_record(workspace.folder, failed)
        _tell(desired, failed)
        raise
    _tell(desired, record)  # after the lock: a slow receiver never holds the folder
    return report


def proxy_hooks(workspace: Workspace, desired: DesiredState, epoch: int) -> Hooks:
    """The engine's real outside world: the proxy serving this desired state (its admin API
    confirms each pool, says what is still in flight, and counts a canary's answers), the
    health probe from this host, and what preempts the pass."""
    admin = desired.admin
    preempted = _preemption(workspace, epoch)

    def counters(urls: Collection[str]) -> Counters | None:
        document = pool_document(admin, timeout=2.0)
        return None if document is None else counters_of(document, urls)

    return Hooks(
        confirm=lambda generation: wait_for_generation(admin, generation),
        drained=lambda urls, timeout: wait_drained(admin, urls, timeout=timeout, cancel=preempted),
        preempted=preempted,
        probe=_late_probe,
        counters=counters,
        records=RepairFiles(workspace.folder),
    )


def _late_probe(url: str, timeout: float) -> str | None:
    return probes.http_probe(url, timeout)  # looked up now: tests replace it


def _preemption(workspace: Workspace, epoch: int) -> Preemption:
    """Why a pass over ``workspace`` should yield: an edit command waits for the lock, the
    desired-state file no longer holds what this pass read, or the engine went away since
    this pass observed it (the reconnect pass re-reads every port)."""
    spec_file = workspace.spec_file
    seen = read_text_or_none(spec_file)

    def preempted() -> str | None:
        if workspace.epoch() != epoch:
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


def _tell(desired: DesiredState | None, record: dict[str, Any]) -> None:
    """The ``notify:`` webhook, for the outcomes it asked for (never a pass in sync)."""
    if desired is None or desired.notify is None:
        return
    if record["outcome"] in desired.notify.events:
        notify(desired.notify.url, record, timeout=desired.notify.timeout)
