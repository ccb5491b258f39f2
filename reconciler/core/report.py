"""PURE. The outcome of a pass: a plan, what each action did, what was written."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.plan import Action, ActionKind, Plan


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    ok: bool
    error: str | None = None
    detail: str = ""
    rolled_back: bool = False  # a new version failed; the old instances kept serving
    deferred: bool = False  # not carried out by this pass (an edit preempted another pass)
    preempted: bool = False  # cut short: a newer change was waiting for the lock
    # Brought back to the version that already converged (an instance stopped, died or removed
    # by hand, or out of the pool), no new desired state: the pass *repaired* it (issue 25).
    repaired: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    plan: Plan
    check: bool
    outcomes: tuple[Outcome, ...] = ()
    files_written: tuple[str, ...] = ()
    routed: tuple[str, ...] = ()
    generation: str = ""
    # Come back in this many seconds even without an event (a crash loop's back-off).
    retry_in: float | None = None

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Backends that failed; a preempted one did not fail (the next pass carries on)."""
        return tuple(o for o in self.outcomes if not o.ok and not o.preempted)

    @property
    def cut_short(self) -> tuple[Outcome, ...]:
        """Backends whose rollout a newer change cut short."""
        return tuple(o for o in self.outcomes if o.preempted)

    @property
    def preempted(self) -> bool:
        return any(o.preempted for o in self.outcomes)

    @property
    def deferred(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.deferred)

    @property
    def changed(self) -> bool:
        return not self.plan.in_sync

    def recap(self) -> dict[str, int]:
        kinds = [a.kind for a in self.plan.actions]
        failed = {o.action.backend for o in self.failed}
        cut = {o.action.backend for o in self.cut_short}
        skipped = failed | cut | {o.action.backend for o in self.deferred}
        return {
            "ok": sum(1 for a in self.plan.actions if a.backend not in skipped),
            "changed": sum(
                1
                for a in self.plan.changes
                if a.kind is not ActionKind.REMOVE and a.backend not in skipped
            ),
            "unchanged": kinds.count(ActionKind.UNCHANGED),
            "removed": sum(1 for a in self.plan.of(ActionKind.REMOVE) if a.backend not in skipped),
            "failed": len(failed),
            "rolled_back": sum(1 for o in self.failed if o.rolled_back),
            "deferred": len(self.deferred),
            "repaired": sum(1 for o in self.outcomes if o.repaired and o.ok and not o.deferred),
            "preempted": len(cut),
        }
