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
from ..adapters.audit import append_record, notify
from ..adapters.lock import Held, project_lock
from ..adapters.workspace import Workspace
from ..core.audit import failure_record, pass_record
from ..core.errors import LbrecError, LockTimeout
from ..core.plan import Plan
from ..core.ports import DockerPort, Progress
from ..core.report import Report
from ..core.spec import DesiredState
from ..engine.converge import converge

__all__ = ["DockerFactory", "run_pass"]

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
            report = converge(
                workspace,
                docker(workspace, desired),
                desired=desired,
                check=False,
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


def _tell(desired: DesiredState | None, record: dict[str, Any]) -> None:
    """The ``notify:`` webhook, for the outcomes it asked for (never a pass in sync)."""
    if desired is None or desired.notify is None:
        return
    if record["outcome"] in desired.notify.events:
        notify(desired.notify.url, record, timeout=desired.notify.timeout)
