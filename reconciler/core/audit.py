"""PURE. One pass as a record: the audit log's line and the notify webhook's document."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ...proxy.config import Revision
from .report import Report

__all__ = ["OUTCOMES", "failure_record", "outcome_of", "pass_record"]


OUTCOMES = (
    "deployed",
    "repaired",
    "deferred",
    "in_sync",
    "failed",
    "rolled_back",
    "preempted",
)


def outcome_of(report: Report) -> str:
    """What a pass did, in one word (docs/cli.md, "The audit log"):

    * ``preempted``: a newer change cut it short (the next pass carries on);
    * ``failed`` / ``rolled_back``: a backend failed (a new version was taken out);
    * ``deployed``: it carried out a change of the desired state (a backend, a weight, a
      setting, a version);
    * ``repaired``: it only brought back what had already converged (an instance stopped,
      died or removed by hand, or out of the pool);
    * ``deferred``: the plan wants a change that it left alone (a held version, a crash loop's
      back-off or hold, what an emergency edit left for later);
    * ``in_sync``: nothing to do."""
    if report.preempted:
        return "preempted"
    if report.failed:
        return "rolled_back" if any(o.rolled_back for o in report.failed) else "failed"
    if not report.changed:
        return "in_sync"
    done = [o for o in report.outcomes if o.ok and not o.deferred]
    plan = report.plan
    if plan.settings_changed or plan.compose_changed or any(not o.repaired for o in done):
        return "deployed"
    if done:
        return "repaired"
    if report.deferred:
        return "deferred"
    return "deployed"


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def pass_record(
    report: Report,
    *,
    command: str,
    started: float,
    ended: float,
    revision: Revision | None = None,
) -> dict[str, Any]:
    """What `lbrec status --history` shows and a ``notify:`` webhook receives."""
    doc: dict[str, Any] = {
        "time": _stamp(ended),
        "command": command,
        "outcome": outcome_of(report),
        "duration_s": round(ended - started, 3),
        "generation": report.generation or None,
        "revision": revision.model_dump() if revision is not None else None,
        "recap": report.recap(),
        "changes": [{"backend": a.backend, "action": a.kind.value} for a in report.plan.changes],
    }
    errors: Mapping[str, str] = {o.action.backend: o.error or "failed" for o in report.failed}
    if errors:
        doc["errors"] = dict(errors)
    if report.deferred:  # what the plan wants and this pass left alone, and why
        doc["deferred"] = {o.action.backend: o.detail for o in report.deferred}
    if report.cut_short:
        doc["preempted"] = {o.action.backend: o.error or "preempted" for o in report.cut_short}
    if repaired := [o.action.backend for o in report.outcomes if o.repaired and o.ok]:
        doc["repaired"] = repaired
    return doc


def failure_record(
    message: str, *, kind: str, command: str, started: float, ended: float
) -> dict[str, Any]:
    """A pass that stopped before it could plan (invalid file, no engine, lock timeout)."""
    return {
        "time": _stamp(ended),
        "command": command,
        "outcome": "failed",
        "duration_s": round(ended - started, 3),
        "error": message,
        "kind": kind,
    }
