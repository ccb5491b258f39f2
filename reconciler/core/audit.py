"""PURE. One pass as a record: the audit log's line and the notify webhook's document."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ...proxy.config import Revision
from .report import Report

__all__ = ["failure_record", "outcome_of", "pass_record"]


def outcome_of(report: Report) -> str:
    """deployed (something changed, all well), in_sync, failed, rolled_back, preempted."""
    if report.preempted:
        return "preempted"
    if report.failed:
        return "rolled_back" if any(o.rolled_back for o in report.failed) else "failed"
    return "deployed" if report.changed else "in_sync"


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
