"""What a pass repairs, as opposed to what it deploys, and the crash loop's back-off and hold.

Two small records (``RepairRecords``: `.lbrec/*.json`, written atomically under the project
lock by adapters/repair_records.py):

* ``converged.json``: per backend, the version (config hash), replicas and weight it last
  converged to. A change to a backend whose desired version, replicas and weight are exactly
  those is a *repair* (an instance stopped, died or was removed by hand, or left the pool):
  the pass's outcome is ``repaired``, not ``deployed`` (core/audit.py).
* ``restarts.json``: per backend, when the loops repaired it by starting or creating an
  instance, for :mod:`..core.crash_loop` (back-off, then a hold). `lbrec status` shows a hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.crash_loop import WINDOW, may_repair, recent
from ..core.labels import BuildInfo, config_hash
from ..core.plan import Action, ActionKind, StepKind
from ..core.ports import RepairRecords
from ..core.report import Outcome
from ..core.spec import DesiredState

__all__ = ["CrashLoops", "remember_converged", "repairs_of", "start_repairs"]

_CONVERGED = "converged"
_RESTARTS = "restarts"


def _version(desired: DesiredState, build: BuildInfo, name: str) -> dict[str, Any] | None:
    spec = desired.backend(name)
    if spec is None:
        return None
    return {
        "hash": config_hash(spec, desired, build),
        "replicas": spec.replicas,
        "weight": spec.weight,
    }


def repairs_of(
    records: RepairRecords, desired: DesiredState, build: BuildInfo, actions: Sequence[Action]
) -> set[str]:
    """The backends whose change only brings back what already converged."""
    known = records.read(_CONVERGED)
    out = set()
    for action in actions:
        if action.kind in (ActionKind.UNCHANGED, ActionKind.REMOVE) or action.new_version:
            continue
        version = _version(desired, build, action.backend)
        if version is not None and known.get(action.backend) == version:
            out.add(action.backend)
    return out


def remember_converged(
    records: RepairRecords,
    desired: DesiredState,
    build: BuildInfo,
    actions: Sequence[Action],
    outcomes: Mapping[str, Outcome],
) -> None:
    """Backends in sync, or carried out without a failure, converged to the desired version."""
    known = records.read(_CONVERGED)
    data = {name: entry for name, entry in known.items() if desired.backend(name) is not None}
    for action in actions:
        if action.role != "backend":
            continue
        outcome = outcomes.get(action.backend)
        done = action.kind is ActionKind.UNCHANGED or (
            outcome is not None and outcome.ok and not outcome.deferred
        )
        version = _version(desired, build, action.backend)
        if done and version is not None:
            data[action.backend] = version
    if data != known:
        records.write(_CONVERGED, data)


def _brings_back(action: Action) -> bool:
    """A repair that starts or creates an instance (a crash loop's restart)."""
    return any(s.kind in (StepKind.START, StepKind.CREATE) for s in action.steps)


class CrashLoops:
    """The crash-loop gate of one pass: which repairs may go now (see core/crash_loop.py)."""

    def __init__(
        self,
        records: RepairRecords,
        desired: DesiredState,
        build: BuildInfo,
        *,
        now: float,
        epoch: int | None,
    ) -> None:
        self.records = records
        self.desired = desired
        self.build = build
        self.now = now
        # An engine restart in this process (a new epoch) starts every history again.
        self.epoch = f"{os.getpid()}:{epoch or 0}"
        self.data = records.read(_RESTARTS)
        self._before = json.dumps(self.data, sort_keys=True)
        self.retry_in: float | None = None

    def _entry(self, name: str) -> dict[str, Any]:
        version = _version(self.desired, self.build, name)
        want = version["hash"] if version else ""
        entry = self.data.get(name) or {}
        pid = str(entry.get("epoch", "")).split(":")[0]
        stale = entry.get("hash") != want or (
            pid == str(os.getpid()) and entry.get("epoch") != self.epoch
        )
        if stale:
            entry = {"hash": want, "times": []}
        entry["epoch"] = self.epoch
        times = [float(t) for t in entry.get("times") or () if isinstance(t, int | float)]
        entry["times"] = recent(times, self.now, WINDOW)
        self.data[name] = entry
        return entry

    def gate(self, actions: Sequence[Action], repairs: set[str]) -> dict[str, Outcome]:
        """The loops: a repair that restarts an instance waits its back-off (deferred, and
        ``retry_in`` says when to come back), and a crash loop is held (one failure, then
        deferred); the others go, and are counted."""
        out: dict[str, Outcome] = {}
        for action in actions:
            name = action.backend
            if name not in repairs or not _brings_back(action):
                continue
            entry = self._entry(name)
            if entry.get("held"):
                out[name] = Outcome(action, ok=True, deferred=True, detail=str(entry["held"]))
                continue
            verdict = may_repair(entry["times"], self.now)
            if verdict.kind == "hold":
                entry["held"] = verdict.describe()
                entry["held_at"] = self.now
                out[name] = Outcome(action, ok=False, error=f"{name}: {verdict.describe()}")
            elif verdict.kind == "wait":
                out[name] = Outcome(action, ok=True, deferred=True, detail=verdict.describe())
                self.retry_in = min(self.retry_in or verdict.wait, verdict.wait)
            else:
                entry["times"].append(self.now)
        return out

    def forget(self, actions: Sequence[Action]) -> None:
        """A person asked (`lbrec apply`): these backends' histories and holds go."""
        for action in actions:
            self.data.pop(action.backend, None)

    def save(self) -> None:
        data = {k: v for k, v in self.data.items() if self.desired.backend(k) is not None}
        if json.dumps(data, sort_keys=True) != self._before:
            self.records.write(_RESTARTS, data)


def start_repairs(
    records: RepairRecords | None,
    desired: DesiredState,
    build: BuildInfo,
    backends: Sequence[Action],
    outcomes: dict[str, Outcome],
    *,
    now: float,
    epoch: int | None,
    crash_loops: bool,
) -> tuple[set[str], CrashLoops | None]:
    """A pass's repairs (the backends whose change only brings back what converged) and its
    crash-loop gate, whose verdicts go into ``outcomes`` (the loops); without ``crash_loops``
    (a person asked) the repaired backends' histories and holds are forgotten."""
    if records is None:
        return set(), None
    repairs = repairs_of(records, desired, build, backends)
    restarts = CrashLoops(records, desired, build, now=now, epoch=epoch)
    if crash_loops:
        outcomes.update(restarts.gate([a for a in backends if a.backend not in outcomes], repairs))
    else:
        restarts.forget([a for a in backends if a.backend in repairs])
    restarts.save()
    return repairs, restarts
