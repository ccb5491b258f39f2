"""PURE. Rendering reports for people (terraform-like plan, Ansible-like recap) and for machines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..core.audit import outcome_of
from ..core.plan import Action, ActionKind, Plan
from ..core.report import Report

__all__ = ["BuildProgress", "Style", "format_plan", "format_recap", "report_json"]


class Style:
    """ANSI colour only when asked (the CLI asks on a TTY without NO_COLOR)."""

    def __init__(self, *, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


_SYMBOL = {
    ActionKind.CREATE: "+",
    ActionKind.RECREATE: "-/+",
    ActionKind.SCALE: "~",
    ActionKind.START: "~",
    ActionKind.REWEIGHT: "~",
    ActionKind.REMOVE: "-",
    ActionKind.UNCHANGED: " ",
}


def _instances(action: Action) -> str:
    n = action.instances_after
    return f"{n} instance{'s' * (n != 1)}"


def _line(action: Action, style: Style) -> str:
    sym = _SYMBOL[action.kind]
    name = action.backend
    if action.role == "lb" and action.kind is not ActionKind.UNCHANGED:
        text = f"  {sym} lb (load balancer container: {action.reason})"
        return style.red(text) if action.kind is ActionKind.REMOVE else style.yellow(text)
    if action.kind is ActionKind.CREATE:
        text = f"  {sym} {name} port {action.port} weight {action.weight_after}"
        if action.instances_after != 1:
            text += f", {_instances(action)}"
        return style.green(text)
    if action.kind is ActionKind.RECREATE:
        replaced = len(action.replaced)
        what = f"replace {replaced} instance{'s' * (replaced != 1)}, start first"
        return style.yellow(f"{sym} {name} ({what}: {action.reason})")
    if action.kind is ActionKind.SCALE:
        return style.yellow(f"  {sym} {name} scale ({action.reason})")
    if action.kind is ActionKind.START:
        return style.yellow(f"  {sym} {name} start ({action.reason})")
    if action.kind is ActionKind.REWEIGHT:
        before = "unrouted" if action.weight_before is None else str(action.weight_before)
        return style.yellow(f"  {sym} {name} weight {before} -> {action.weight_after}")
    if action.kind is ActionKind.REMOVE:
        return style.red(f"  {sym} {name} ({action.reason})")
    return f"    {name}"


def format_plan(the_plan: Plan, style: Style, *, verbose: bool = False) -> str:
    lines: list[str] = []
    if the_plan.in_sync:
        return "No changes. Containers and config/backends.json match the desired state."
    lines.append("lbrec will perform the following actions:")
    lines.append("")
    for action in the_plan.actions:
        if action.kind is ActionKind.UNCHANGED and not verbose:
            continue
        lines.append(_line(action, style))
        if action.kind in (ActionKind.RECREATE, ActionKind.SCALE) or (verbose and action.steps):
            lines.extend(
                style.dim(f"      {i}. {step.describe()}") for i, step in enumerate(action.steps, 1)
            )
    for setting in the_plan.settings_changed:
        lines.append(style.yellow(f"  ~ pool {setting}"))
    if the_plan.compose_changed and not the_plan.changes:
        lines.append(style.yellow("  ~ docker-compose.yml rewritten (no container change)"))
    counts = {k: len(the_plan.of(k)) for k in ActionKind}
    lines.append("")
    lines.append(
        style.bold(
            f"Plan: {counts[ActionKind.CREATE]} to create, {counts[ActionKind.RECREATE]} to "
            f"replace, {counts[ActionKind.SCALE]} to scale, {counts[ActionKind.START]} to "
            f"start, {counts[ActionKind.REWEIGHT]} to reweight, {counts[ActionKind.REMOVE]} "
            "to remove."
        )
    )
    return "\n".join(lines)


def format_recap(report: Report, style: Style) -> str:
    recap = report.recap()
    lines = []
    for outcome in report.failed:
        name = outcome.action.backend
        error = outcome.error or "failed"
        error = error.removeprefix(f"{name}: ")  # the backend is named once
        lines.append(style.red(f"FAILED {name}: {error}"))
        for detail in outcome.detail.splitlines():
            lines.append(style.dim(f"    {detail}"))
    for outcome in report.cut_short:
        name = outcome.action.backend
        error = (outcome.error or "preempted").removeprefix(f"{name}: ")
        lines.append(style.yellow(f"PREEMPTED {name}: {error}"))
    for outcome in report.deferred:
        lines.append(
            style.yellow(
                f"DEFERRED {outcome.action.backend}: {outcome.action.reason or 'pending'} "
                f"({outcome.detail})"
            )
        )
    parts = [
        style.green(f"ok={recap['ok']}"),
        style.yellow(f"changed={recap['changed']}") if recap["changed"] else "changed=0",
        style.red(f"removed={recap['removed']}") if recap["removed"] else "removed=0",
        style.red(f"failed={recap['failed']}") if recap["failed"] else "failed=0",
    ]
    if recap["repaired"]:
        parts.append(style.yellow(f"repaired={recap['repaired']}"))
    if recap["deferred"]:
        parts.append(style.yellow(f"deferred={recap['deferred']}"))
    if recap["preempted"]:
        parts.append(style.yellow(f"preempted={recap['preempted']}"))
    if recap["rolled_back"]:
        parts.append(style.red(f"rolled_back={recap['rolled_back']}"))
    lines.append("RECAP " + "  ".join(parts) + f"  generation={report.generation}")
    return "\n".join(lines)


def _action_json(action: Action) -> dict[str, Any]:
    return {
        "backend": action.backend,
        "action": action.kind.value,
        "reason": action.reason,
        "port": action.port,
        "weight_before": action.weight_before,
        "weight_after": action.weight_after,
        "containers": list(action.container_ids),
        "instances_before": action.instances_before,
        "instances_after": action.instances_after,
        "changes": list(action.changes),
        "steps": [
            {
                "step": step.kind.value,
                "batch": step.batch,
                "count": step.count,
                "containers": list(step.container_ids),
                "reason": step.reason,
            }
            for step in action.steps
        ],
    }


def report_json(report: Report) -> str:
    outcomes = {o.action.backend: o for o in report.outcomes}
    actions = []
    for action in report.plan.actions:
        item = _action_json(action)
        if (outcome := outcomes.get(action.backend)) is not None:
            item["ok"] = outcome.ok
            item["error"] = outcome.error
            item["rolled_back"] = outcome.rolled_back
            item["deferred"] = outcome.deferred
            item["repaired"] = outcome.repaired
            item["preempted"] = outcome.preempted
            if outcome.deferred:
                item["detail"] = outcome.detail
        actions.append(item)
    document = {
        "check": report.check,
        # deployed, repaired, deferred, in_sync, failed, rolled_back, preempted (core/audit.py)
        "outcome": "plan" if report.check else outcome_of(report),
        "in_sync": report.plan.in_sync,
        "actions": actions,
        "settings_changed": list(report.plan.settings_changed),
        "compose_changed": report.plan.compose_changed,
        "files_written": list(report.files_written),
        "routed": list(report.routed),
        "generation": report.generation,
        "recap": report.recap(),
    }
    return json.dumps(document, indent=2)


class BuildProgress:
    """Condense Docker's build log to its steps (`[2/3] COPY ...`) and lbrec's own lines."""

    def __init__(self, emit: Callable[[str], None], style: Style) -> None:
        self.emit = emit
        self.style = style
        self.seen: set[str] = set()

    def line(self, text: str) -> None:
        if text.startswith("#"):
            step = text.split(" ", 1)[1] if " " in text else ""
            if step.startswith("[") and "internal]" not in step and step not in self.seen:
                self.seen.add(step)
                self.emit(self.style.dim(f"  | {step}"))
            return
        if "level=warning" in text or text.strip().endswith("Built"):
            return
        self.emit(text)
