"""Canary rollouts: the pure judge, the planned steps, and the executor with a fake proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbrec.proxy.stats import LATENCY_BOUNDS
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.canary import Counters, canary_verdict, counters_of
from lbrec.reconciler.core.plan import ActionKind, StepKind
from lbrec.reconciler.core.render import POOL_FILE
from lbrec.reconciler.engine.converge import converge
from lbrec.reconciler.engine.hooks import Hooks

from ..fakes import FakeDocker, make_folder

BINS = len(LATENCY_BOUNDS) + 1


def _window(requests: int, bad: int = 0, latency_bin: int = 5, errors: int = 0) -> Counters:
    latency = [0] * BINS
    latency[latency_bin] = requests
    # as the proxy counts: `errors` holds every 5xx answer and every failed exchange
    return Counters(requests, bad + errors, (0, 0, requests - bad, 0, 0, bad), tuple(latency))


# --- the judge ---------------------------------------------------------------------------------


def test_judge_table() -> None:
    rules: dict[str, Any] = {"max_error_rate": 0.01, "max_p99": 0.5, "min_requests": 50}
    assert canary_verdict(_window(40), **rules).kind == "wait"
    assert canary_verdict(_window(140, bad=17), **rules).reason == (
        "error rate 12.1% > 1.0% over 140 requests"
    )
    slow = _window(200, latency_bin=LATENCY_BOUNDS.index(1.5))
    assert (
        canary_verdict(slow, **rules).kind == "fail"
        and "p99 " in canary_verdict(slow, **rules).reason
    )
    assert canary_verdict(_window(200, bad=1), **rules).kind == "pass"
    failed_exchanges = _window(100, errors=5)
    assert canary_verdict(failed_exchanges, **rules).kind == "fail"  # no answer counts as an error


@given(
    requests=st.integers(50, 10_000),
    rate=st.floats(0, 1),
    limit=st.floats(0, 1),
    latency_bin=st.integers(0, BINS - 1),
    p99_limit=st.sampled_from([None, 0.01, 0.1, 1.0, 10.0]),
)
def test_property_below_every_threshold_passes_above_any_fails(
    requests: int, rate: float, limit: float, latency_bin: int, p99_limit: float | None
) -> None:
    bad = int(requests * rate)
    window = _window(requests, bad=bad, latency_bin=latency_bin)
    verdict = canary_verdict(window, max_error_rate=limit, max_p99=p99_limit, min_requests=50)
    p99 = window.p99()
    too_slow = p99_limit is not None and p99 is not None and p99 > p99_limit
    if bad / requests > limit or too_slow:
        assert verdict.kind == "fail", verdict
    else:
        assert verdict.kind == "pass", verdict


def test_windows_are_differences_of_snapshots_and_never_negative() -> None:
    before, after = _window(100, bad=10), _window(300, bad=10)
    window = after - before
    assert (window.requests, window.failed) == (200, 0)
    assert _window(90, bad=9).error_rate == pytest.approx(0.1)  # each 5xx counted once
    assert (before - after).requests == 0  # a restarted proxy's counters: 0, not negative


def test_counters_of_a_pool_document_sums_only_the_given_urls() -> None:
    doc = {
        "backends": [
            {
                "url": u,
                "requests": 10,
                "errors": 1,
                "status_total": {"2xx": 8, "5xx": 1},
                "latency_total": [9] + [0] * (BINS - 1),
            }
            for u in ("http://a", "http://b", "http://c")
        ]
    }
    total = counters_of(doc, ["http://a", "http://c"])
    assert (total.requests, total.errors, total.failed) == (20, 2, 2)


# --- plan and executor --------------------------------------------------------------------------

CANARY = (
    "rollout: {strategy: canary, steps: [5, 25, 100], interval: 10s, min_healthy_time: 0,"
    " healthy_deadline: 1s, drain_timeout: 1s}\n"
)
WEB = "backends:\n  - {name: web, port: 8000, weight: 3, replicas: 2}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def _deployed(folder: Path) -> tuple[Workspace, FakeDocker]:
    (folder / "desired-state.yaml").write_text(CANARY + WEB)
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    converge(workspace, docker, check=False, hooks=docker.hooks())
    (folder / "desired-state.yaml").write_text(
        CANARY + WEB.replace("replicas: 2}", "replicas: 2, env: {V: '2'}}")
    )
    docker.desired = workspace.load()
    return workspace, docker


def test_a_canary_plans_steps_then_promotes(folder: Path) -> None:
    workspace, docker = _deployed(folder)
    old = {c.id for c in docker.of("web")}
    splits: list[list[tuple[str | None, int | None]]] = []
    hooks = docker.hooks()
    confirm = hooks.confirm
    assert confirm is not None

    def record(generation: str) -> bool | None:
        pool = json.loads((folder / POOL_FILE).read_text())["backends"]
        splits.append(sorted((b.get("version"), b.get("percent")) for b in pool))
        return confirm(generation)

    hooks.confirm = record
    report = converge(workspace, docker, check=False, hooks=hooks)
    (action,) = report.plan.changes
    assert action.kind is ActionKind.RECREATE and action.reason.endswith("canary 5% -> 25% -> 100%")
    assert [(s.kind, s.percent) for s in action.steps if s.kind is not StepKind.WAIT] == [
        (StepKind.CREATE, 0),
        (StepKind.SPLIT, 5),
        (StepKind.JUDGE, 5),
        (StepKind.SPLIT, 25),
        (StepKind.JUDGE, 25),
        (StepKind.SPLIT, 100),
        (StepKind.RETIRE, 0),
    ]
    assert not report.failed
    assert [("canary", 5)] * 2 + [("stable", 95)] * 2 in splits
    assert [("canary", 25)] * 2 + [("stable", 75)] * 2 in splits
    assert not {c.id for c in docker.of("web")} & old and len(docker.of("web")) == 2
    pool = json.loads((folder / POOL_FILE).read_text())["backends"]
    assert all("percent" not in b for b in pool)  # promoted: one version, no split left
    assert converge(workspace, docker, check=True, hooks=docker.hooks()).plan.in_sync


def test_a_bad_canary_is_rolled_back_at_the_first_step(folder: Path) -> None:
    workspace, docker = _deployed(folder)
    old = {c.id for c in docker.of("web")}
    docker.bad_answers = {"web"}
    report = converge(workspace, docker, check=False, hooks=docker.hooks())
    (failure,) = report.failed
    assert failure.rolled_back
    assert failure.error is not None
    assert "canary rolled back at step 5%: error rate 33." in failure.error
    assert {c.id for c in docker.of("web")} == old  # the new instances were removed
    pool = json.loads((folder / POOL_FILE).read_text())["backends"]
    assert len(pool) == 2 and all("percent" not in b for b in pool)  # all traffic on the old


def test_canary_steps_must_end_at_100(tmp_path: Path) -> None:
    from lbrec.reconciler.core.errors import SpecError
    from lbrec.reconciler.core.spec import parse_spec

    with pytest.raises(SpecError, match=r"rollout\.steps: must end with 100"):
        parse_spec("rollout: {strategy: canary, steps: [5, 50]}\nbackends: []\n")
    with pytest.raises(SpecError, match="increasing"):
        parse_spec("rollout: {strategy: canary, steps: [50, 5, 100]}\nbackends: []\n")


def test_an_interrupted_canary_is_rolled_back_and_started_again(folder: Path) -> None:
    """lbrec killed mid-canary: both versions run. The next pass never promotes unjudged."""
    workspace, docker = _deployed(folder)
    old = {c.id for c in docker.of("web")}
    hooks = docker.hooks()
    calls = {"n": 0}

    def preempted() -> str | None:  # cut the first pass short in its first judgement
        calls["n"] += 1
        return "killed" if calls["n"] > 60 else None

    hooks.preempted = preempted
    first = converge(workspace, docker, check=False, hooks=hooks)
    assert "preempted (killed)" in (first.cut_short[0].error or "")
    # what a kill mid-judgement leaves: both versions, the split in the pool
    assert len(docker.of("web")) == 4
    pool = json.loads((folder / POOL_FILE).read_text())["backends"]
    assert sorted(b["percent"] for b in pool) in ([5, 5, 95, 95], [25, 25, 75, 75])
    (action,) = converge(workspace, docker, check=True, hooks=docker.hooks()).plan.changes
    assert action.steps[0].kind is StepKind.RETIRE and "interrupted canary" in action.reason
    assert set(action.steps[0].container_ids).isdisjoint(old)  # the new ones go first
    assert [s.percent for s in action.steps if s.kind is StepKind.JUDGE] == [5, 25]
    report = converge(workspace, docker, check=False, hooks=docker.hooks())
    assert not report.failed
    assert not {c.id for c in docker.of("web")} & old and len(docker.of("web")) == 2


# --- lbrec rollout status / promote / abort -----------------------------------------------------


def _running_canary(folder: Path) -> None:
    from lbrec.reconciler.adapters.rollout_control import write_state

    write_state(folder, "web", {"state": "judging", "percent": 5, "steps": [5, 100]})


def _asking(
    hooks: Hooks, folder: Path, what: Literal["promote", "promote-full", "abort"], after: int = 5
) -> Hooks:
    """The operator sends a request while the first step is being judged."""
    from lbrec.reconciler.adapters.rollout_control import request

    tick = hooks.sleep
    naps = {"n": 0}

    def sleep(seconds: float) -> None:
        naps["n"] += 1
        if naps["n"] == after:
            request(folder, None, what)
        tick(seconds)

    hooks.sleep = sleep
    return hooks


def test_abort_rolls_back_at_once_with_no_judgement(folder: Path) -> None:
    from lbrec.reconciler.adapters.rollout_control import take_request

    workspace, docker = _deployed(folder)
    old = {c.id for c in docker.of("web")}
    _running_canary(folder)
    from lbrec.reconciler.adapters.rollout_control import request

    request(folder, "web", "abort")  # left over from an earlier canary: not this one's
    hooks = _asking(docker.hooks(), folder, "abort")
    report = converge(workspace, docker, check=False, hooks=hooks)
    (failure,) = report.failed
    assert "step 5%: aborted by `lbrec rollout abort`" in (failure.error or "")
    assert failure.rolled_back
    assert {c.id for c in docker.of("web")} == old
    assert take_request(folder, "web") is None  # nothing left for the next canary


def test_promote_full_skips_the_remaining_steps(folder: Path) -> None:
    from lbrec.reconciler.adapters.rollout_control import read_state

    workspace, docker = _deployed(folder)
    seen: list[int] = []
    hooks = _asking(docker.hooks(), folder, "promote-full")
    confirm = hooks.confirm
    assert confirm is not None

    def record(generation: str) -> bool | None:
        pool = json.loads((folder / POOL_FILE).read_text())["backends"]
        seen.extend(b["percent"] for b in pool if b.get("version") == "canary")
        return confirm(generation)

    hooks.confirm = record
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert not report.failed
    assert 25 not in seen  # the 25 % step never happened
    assert read_state(folder) == {}  # done: no canary in progress


def test_a_pause_step_waits_for_promote(folder: Path) -> None:
    from lbrec.reconciler.adapters.rollout_control import request

    text = CANARY.replace("steps: [5, 25, 100]", "steps: [5, pause, 100]")
    (folder / "desired-state.yaml").write_text(text + WEB)
    workspace = Workspace.at(folder / "desired-state.yaml")
    docker = FakeDocker(workspace, workspace.load())
    converge(workspace, docker, check=False, hooks=docker.hooks())
    (folder / "desired-state.yaml").write_text(
        text + WEB.replace("replicas: 2}", "replicas: 2, env: {V: '2'}}")
    )
    docker.desired = workspace.load()
    hooks = docker.hooks()
    tick = hooks.sleep
    naps = {"n": 0}

    def sleep(seconds: float) -> None:  # the operator promotes after a while
        naps["n"] += 1
        if naps["n"] == 200:
            request(folder, "web", "promote")
        tick(seconds)

    hooks.sleep = sleep
    report = converge(workspace, docker, check=False, hooks=hooks)
    assert not report.failed and naps["n"] >= 200  # it waited for the promote
    (action,) = report.plan.changes
    assert [s.kind for s in action.steps].count(StepKind.PAUSE) == 1


def test_promote_without_a_canary_is_a_clear_error(folder: Path) -> None:
    from lbrec.reconciler.adapters.rollout_control import request
    from lbrec.reconciler.core.errors import UsageError

    with pytest.raises(UsageError, match="no canary in progress"):
        request(folder, "web", "promote")
