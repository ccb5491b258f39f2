"""A canary's steps and every rollback: judge a step on the proxy's counters, wait at a pause,
record the canary's state for `lbrec rollout`, take a failed new version out, and say a rollout
given up (:func:`given_up`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..core.canary import canary_verdict
from ..core.errors import ApplyError
from ..core.plan import Action, Step
from ..core.report import Outcome
from ..core.spec import BackendSpec
from .hooks import Preempted
from .run import Run


def hold_canary_step(run: Run, spec: BackendSpec, ids: Sequence[str], percent: int) -> str | None:
    """Hold the step for ``interval`` and judge the new version on its own answers; a step
    with too few requests is extended (up to 10 intervals). None: passed; else the reason."""
    rollout = spec.rollout_of(run.desired)
    analysis = rollout.analysis
    hooks = run.hooks
    urls = [u for i in ids if (u := run.container(i).url) is not None]
    unjudged = f"no proxy answers on {run.desired.admin}: the canary cannot be judged"
    if hooks.counters is None or (before := hooks.counters(urls)) is None:
        return unjudged
    start = hooks.clock()
    reason = ""
    for extension in range(10):
        end = start + rollout.interval * (extension + 1)
        while hooks.clock() < end:
            run.check_preempted()
            asked = run.workspace.rollouts.take_request(spec.name)
            if asked == "abort":
                return f"step {percent}%: aborted by `lbrec rollout abort`"
            if asked is not None:
                if asked == "promote-full":
                    run.promote_full(spec.name)
                run.say(f"{spec.name}: step {percent}% promoted by `lbrec rollout {asked}`")
                return None
            hooks.sleep(max(min(0.2, end - hooks.clock()), 0.01))
        after = hooks.counters(urls)
        if after is None:
            return unjudged
        verdict = canary_verdict(
            after - before,
            max_error_rate=analysis.max_error_rate,
            max_p99=analysis.max_p99,
            min_requests=analysis.min_requests,
        )
        if verdict.kind == "pass":
            run.say(f"{spec.name}: step {percent}% passed: {verdict.reason}")
            return None
        if verdict.kind == "fail":
            return f"step {percent}%: {verdict.reason}"
        reason = verdict.reason
        run.say(f"{spec.name}: step {percent}% extended: {reason}")
    return f"step {percent}%: {reason} in {10 * rollout.interval:g}s"


def pause_step(run: Run, name: str) -> str | None:
    """Hold until `lbrec rollout promote` (None) or `abort` (the reason to roll back)."""
    while True:
        run.check_preempted()
        asked = run.workspace.rollouts.take_request(name)
        if asked == "abort":
            return "a pause: aborted by `lbrec rollout abort`"
        if asked is not None:
            if asked == "promote-full":
                run.promote_full(name)
            return None
        run.hooks.sleep(0.2)


def canary_state(run: Run, action: Action, step: Step, state: str) -> None:
    spec = run.desired.backend(action.backend)
    rollout = spec.rollout_of(run.desired) if spec is not None else run.desired.rollout
    run.workspace.rollouts.write_state(
        action.backend,
        {
            "state": state,
            "percent": step.percent,
            "steps": list(rollout.steps),
            "interval": rollout.interval,
            "since": time.time(),
            "reason": action.reason,
        },
    )


def roll_back_canary(run: Run, action: Action, ids: Sequence[str], problem: str) -> Outcome:
    """All traffic back to the old version at once (a rollback needs no judgement), then the
    new instances drain and go."""
    name = action.backend
    spec = run.desired.backend(name)
    rollout = spec.rollout_of(run.desired) if spec is not None else run.desired.rollout
    run.end_split(name)
    run.workspace.rollouts.write_state(name, None)
    try:
        run.retire(name, ids, rollout.drain_timeout)
    except ApplyError as err:
        problem += f" (removing the new instances failed too: {err.message})"
    except Preempted:
        problem += " (its drain was cut short: the next pass removes the new instances)"
    return given_up(
        run, action, f"canary rolled back at {problem}", then="the old version serves all traffic"
    )


def roll_back(
    run: Run, action: Action, ids: Sequence[str], problem: str, *, created: bool
) -> Outcome:
    """A batch failed its wait. One this pass ``created`` is removed; existing containers it
    started or would have routed are left as they are (the next pass sees them again). Only a
    new *version* that failed counts as rolled back (loops then hold that version)."""
    if created:
        try:
            run.docker.discard(ids)
        except ApplyError as err:
            problem += f" (removing the new instance failed too: {err.message})"
    old = len(run.routed(action.backend))
    if not action.new_version:
        run.say(f"{action.backend}: not healthy; {old} instance(s) keep serving")
        return Outcome(action, ok=False, error=f"{action.backend}: {problem}")
    run.say(f"{action.backend}: rolled back; {old} old instance(s) keep serving")
    error = f"{action.backend}: new version not healthy, rolled back: {problem}"
    return Outcome(action, ok=False, error=error, rolled_back=created)


def given_up(run: Run, action: Action, what: str, *, then: str, preempted: bool = False) -> Outcome:
    """A rollout given up: said as it happens (``what``), and recorded with what serves now
    (``then``); rolled back unless ``preempted`` (the next pass carries on)."""
    run.say(f"{action.backend}: {what}")
    return Outcome(
        action,
        ok=False,
        error=f"{action.backend}: {what}; {then}",
        rolled_back=not preempted,
        preempted=preempted,
    )
