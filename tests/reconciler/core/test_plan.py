"""plan(): a pure function from (desired, observed) to ordered actions with reasons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbrec.proxy.config import BackendEntry, BackendsConfig
from lbrec.reconciler.core.engines.auto import render_deploy_file
from lbrec.reconciler.core.labels import CONFIG_HASH, BuildInfo, backend_labels, lb_labels
from lbrec.reconciler.core.plan import Action, ActionKind, Plan, StepKind, plan
from lbrec.reconciler.core.render import converged_pool, render_pool
from lbrec.reconciler.core.spec import BackendSpec, DesiredState
from lbrec.reconciler.core.state import Observed, ObservedContainer
from tests.support.examples import examples

from ..conftest import converged_observed

K = ActionKind
BUILD = BuildInfo(base_image=None, context_digest="a" * 64)


def _desired(*backends: tuple[str, int, int], **settings: object) -> DesiredState:
    return DesiredState.model_validate(
        {
            **settings,
            "backends": [{"name": n, "port": p, "weight": w} for n, p, w in backends],
        }
    )


DESIRED = _desired(("a", 9001, 2), ("b", 9002, 3))


def _labels(
    name: str, desired: DesiredState = DESIRED, build: BuildInfo = BUILD, **change: object
) -> dict[str, str]:
    spec = desired.backend(name) or BackendSpec(name=name, port=9999)
    return backend_labels(spec.model_copy(update=change), desired, build)


_PORTS: dict[str, int] = {}


def _endpoint(name: str) -> str:
    """One host port per backend name, the same wherever it is asked for."""
    return f"127.0.0.1:{_PORTS.setdefault(name, 9100 + len(_PORTS))}"


def _ctr(
    name: str,
    *,
    state: str = "running",
    health: str | None = "healthy",
    labels: dict[str, str] | None = None,
    id: str | None = None,
    endpoint: str | None = "",
) -> ObservedContainer:
    return ObservedContainer(
        id=id or f"id-{name}",
        backend=name,
        state=state,
        health=health,
        labels=_labels(name) if labels is None else labels,
        endpoint=_endpoint(name) if endpoint == "" else endpoint,
    )


def _pool(**weights: int) -> BackendsConfig:
    return BackendsConfig(
        backends=tuple(
            BackendEntry(name=n, url=f"http://{_endpoint(n)}", weight=w) for n, w in weights.items()
        )
    )


def _observed(*containers: ObservedContainer, pool: BackendsConfig | None = None) -> Observed:
    return Observed(containers=containers, pool=pool)


ROUTED = _pool(a=2, b=3)


def _action(p: Plan, name: str) -> Action:
    (action,) = [a for a in p.actions if a.backend == name]
    return action


# --- one backend at a time: (observed for backend "a") -> (kind, reason) ------------------------


CASES: list[tuple[str, Observed, BuildInfo, ActionKind, str]] = [
    ("no-container", _observed(_ctr("b"), pool=ROUTED), BUILD, K.CREATE, "no container"),
    ("unchanged", _observed(_ctr("a"), _ctr("b"), pool=ROUTED), BUILD, K.UNCHANGED, ""),
    (
        "port-changed",
        _observed(_ctr("a", labels=_labels("a", port=9005)), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "port 9005 -> 9001",
    ),
    (
        "env-changed",
        _observed(_ctr("a", labels=_labels("a", env={"X": "1"})), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "env ",
    ),
    (
        "image-changed",
        _observed(_ctr("a"), _ctr("b"), pool=ROUTED),
        BuildInfo(base_image="python:3.13-slim", context_digest="a" * 64),
        K.RECREATE,
        "image (Dockerfile default) -> python:3.13-slim",
    ),
    (
        "build-changed",
        _observed(_ctr("a"), _ctr("b"), pool=ROUTED),
        BuildInfo(base_image=None, context_digest="b" * 64),
        K.RECREATE,
        "build aaaaaaaaaaaa -> bbbbbbbbbbbb",
    ),
    (
        "hash-but-no-field-labels",
        _observed(_ctr("a", labels={CONFIG_HASH: "0" * 16}), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "port (unset) -> 9001",
    ),
    (
        "exited",
        _observed(_ctr("a", state="exited", health=None), _ctr("b"), pool=ROUTED),
        BUILD,
        K.START,
        "container exited",
    ),
    (
        "created",
        _observed(_ctr("a", state="created", health=None), _ctr("b"), pool=ROUTED),
        BUILD,
        K.START,
        "container created",
    ),
    (
        "unhealthy",
        _observed(_ctr("a", health="unhealthy"), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "container unhealthy",
    ),
    (
        "dead",
        _observed(_ctr("a", state="dead", health=None), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "container dead",
    ),
    (
        "paused-cannot-be-started",
        _observed(_ctr("a", state="paused"), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "container paused",
    ),
    (
        "restarting-counts-as-running",
        _observed(_ctr("a", state="restarting", health="starting"), _ctr("b"), pool=ROUTED),
        BUILD,
        K.UNCHANGED,
        "",
    ),
    (
        "two-containers",
        _observed(
            _ctr("a", id="x1"), _ctr("a", id="x2", endpoint="127.0.0.1:1"), _ctr("b"), pool=ROUTED
        ),
        BUILD,
        K.SCALE,
        "replicas 2 -> 1",
    ),
    (
        "running-without-a-published-port",
        _observed(_ctr("a", endpoint=None), _ctr("b"), pool=ROUTED),
        BUILD,
        K.RECREATE,
        "container publishes no port",
    ),
    (
        "starting-is-not-unhealthy",
        _observed(_ctr("a", health="starting"), _ctr("b"), pool=ROUTED),
        BUILD,
        K.UNCHANGED,
        "",
    ),
    (
        "no-healthcheck-running",
        _observed(_ctr("a", health=None), _ctr("b"), pool=ROUTED),
        BUILD,
        K.UNCHANGED,
        "",
    ),
    (
        "weight-differs",
        _observed(_ctr("a"), _ctr("b"), pool=_pool(a=5, b=3)),
        BUILD,
        K.REWEIGHT,
        "weight 5 -> 2",
    ),
    (
        "not-routed",
        _observed(_ctr("a"), _ctr("b"), pool=_pool(b=3)),
        BUILD,
        K.REWEIGHT,
        "not routed",
    ),
    (
        "no-pool-file",
        _observed(_ctr("a"), _ctr("b")),
        BUILD,
        K.REWEIGHT,
        "not routed",
    ),
    (
        "hash-change-wins-over-stopped",
        _observed(
            _ctr("a", state="exited", labels=_labels("a", port=9005)), _ctr("b"), pool=ROUTED
        ),
        BUILD,
        K.RECREATE,
        "port 9005 -> 9001",
    ),
    (
        "stopped-wins-over-weight",
        _observed(_ctr("a", state="exited"), _ctr("b"), pool=_pool(a=9, b=3)),
        BUILD,
        K.START,
        "container exited",
    ),
]


@pytest.mark.parametrize(
    ("observed", "build", "kind", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_backend_action_and_reason(
    observed: Observed, build: BuildInfo, kind: ActionKind, reason: str
) -> None:
    result = plan(DESIRED, observed, build=build)
    action = _action(result, "a")
    assert action.kind is kind
    if kind is K.UNCHANGED:
        assert action.reason == ""
    else:
        assert reason and reason in action.reason
    assert action.port == 9001
    assert action.weight_after == 2
    assert action.container_ids == tuple(c.id for c in observed.for_backend("a"))
    assert [a.backend for a in result.actions].count("a") == 1


def test_recreate_reason_lists_every_changed_field_in_order() -> None:
    stale = _labels("a", port=9005, env={"X": "1"})
    build = BuildInfo(base_image="python:3.13-slim", context_digest="b" * 64)
    action = _action(
        plan(DESIRED, _observed(_ctr("a", labels=stale), pool=ROUTED), build=build), "a"
    )
    assert action.kind is K.RECREATE
    fields = [part.split(" ")[0] for part in action.reason.split(", ")]
    assert fields == ["port", "image", "build", "env"]


def test_reweight_touches_no_container() -> None:
    desired = _desired(("a", 9001, 2), ("b", 9002, 3))
    observed = _observed(_ctr("a"), _ctr("b"), pool=_pool(a=2, b=5))
    result = plan(desired, observed, build=BUILD)
    action = _action(result, "b")
    assert (action.kind, action.reason) == (K.REWEIGHT, "weight 5 -> 3")
    assert (action.weight_before, action.weight_after) == (5, 3)
    assert action.touches_container is False
    assert _action(result, "a").kind is K.UNCHANGED
    assert [a.backend for a in result.changes] == ["b"]


def test_reweight_reason_2_to_5() -> None:
    desired = _desired(("a", 9001, 5))
    observed = _observed(_ctr("a", labels=_labels("a", desired)), pool=_pool(a=2))
    action = _action(plan(desired, observed, build=BUILD), "a")
    assert (action.kind, action.reason, action.touches_container) == (
        K.REWEIGHT,
        "weight 2 -> 5",
        False,
    )


def test_drain_to_weight_zero_is_a_reweight() -> None:
    desired = _desired(("a", 9001, 0))
    observed = _observed(_ctr("a", labels=_labels("a", desired)), pool=_pool(a=2))
    action = _action(plan(desired, observed, build=BUILD), "a")
    assert (action.kind, action.reason) == (K.REWEIGHT, "weight 2 -> 0")


def test_remove_container_not_desired_carries_its_ids() -> None:
    old = _labels("old", port=9050)
    observed = _observed(
        _ctr("a"),
        _ctr("b"),
        _ctr("old", labels=old, id="c1"),
        _ctr("old", labels=old, id="c2", state="exited"),
        pool=_pool(a=2, b=3, old=4),
    )
    result = plan(DESIRED, observed, build=BUILD)
    action = _action(result, "old")
    assert action.kind is K.REMOVE
    assert action.reason == "not in desired state"
    assert action.container_ids == ("c1", "c2")
    assert action.weight_before == 4
    assert action.touches_container is True


def test_remove_pool_only_entry() -> None:
    observed = _observed(_ctr("a"), _ctr("b"), pool=_pool(a=2, b=3, ghost=1))
    action = _action(plan(DESIRED, observed, build=BUILD), "ghost")
    assert action.kind is K.REMOVE
    assert action.reason == "not in desired state (pool only)"
    assert action.container_ids == ()
    assert action.weight_before == 1
    assert action.touches_container is False


def test_everything_removed_when_nothing_is_desired() -> None:
    observed = _observed(_ctr("a"), _ctr("b"), pool=ROUTED)
    result = plan(DesiredState(), observed, build=BUILD)
    assert [(a.kind, a.backend) for a in result.actions] == [(K.REMOVE, "a"), (K.REMOVE, "b")]


def test_actions_are_ordered_remove_reweight_start_scale_replace_create() -> None:
    desired = _desired(
        ("create2", 9011, 1),
        ("create1", 9010, 1),
        ("recreate", 9020, 1),
        ("start", 9030, 1),
        ("reweight", 9040, 7),
        ("same", 9050, 1),
        ("scale", 9060, 1),
    )

    def ok(name: str, **kw: object) -> ObservedContainer:
        return _ctr(name, labels=_labels(name, desired), **kw)  # type: ignore[arg-type]

    observed = _observed(
        ok("same"),
        ok("reweight"),
        ok("start", state="exited", health=None),
        _ctr("recreate", labels=_labels("recreate", desired, port=1)),
        _ctr("zombie", labels=_labels("zombie")),
        ok("scale"),
        ok("scale", id="scale-2", endpoint="127.0.0.1:2"),
        pool=_pool(same=1, reweight=1, start=1, recreate=1, ghost=1, scale=1),
    )
    result = plan(desired, observed, build=BUILD)
    assert [(a.kind, a.backend) for a in result.actions] == [
        (K.REMOVE, "ghost"),
        (K.REMOVE, "zombie"),
        (K.REWEIGHT, "reweight"),
        (K.START, "start"),
        (K.SCALE, "scale"),
        (K.RECREATE, "recreate"),
        (K.CREATE, "create1"),
        (K.CREATE, "create2"),
        (K.UNCHANGED, "same"),
    ]
    assert [a.backend for a in result.of(K.CREATE)] == ["create1", "create2"]
    assert len(result.changes) == 8
    assert not result.in_sync


def test_converged_is_in_sync(converged: Callable[..., Observed], build: BuildInfo) -> None:
    desired = _desired(("a", 9001, 2), ("b", 9002, 0), project="demo")
    observed = converged(desired, build)
    result = plan(
        desired,
        observed,
        build=build,
        target_pool=converged_pool(desired, observed, build, None),
        compose_text=render_deploy_file(desired, build),
    )
    assert result.in_sync
    assert all(a.kind is K.UNCHANGED and a.reason == "" for a in result.actions)
    assert result.changes == ()
    assert result.settings_changed == ()
    assert result.compose_changed is False


# --- pool-wide settings and the compose file ---------------------------------------------------


def test_settings_changed_for_pool_wide_settings(
    converged: Callable[..., Observed], build: BuildInfo
) -> None:
    before = _desired(("a", 9001, 2))
    after = _desired(("a", 9001, 2), health={"interval": 5}, listen="127.0.0.1:7000")
    observed = converged(before, build)
    target = converged_pool(after, observed, build, None)
    result = plan(after, observed, build=build, target_pool=target)
    assert result.settings_changed == (
        "health.interval 2.0 -> 5.0",
        "listen 127.0.0.1:8080 -> 127.0.0.1:7000",
    )
    assert [a.kind for a in result.actions] == [K.UNCHANGED]  # no container is touched
    assert not result.in_sync


def test_settings_not_compared_without_a_target_pool(
    converged: Callable[..., Observed], build: BuildInfo
) -> None:
    before = _desired(("a", 9001, 2))
    after = _desired(("a", 9001, 2), health={"interval": 5})
    assert plan(after, converged(before, build), build=build).settings_changed == ()


def test_pool_file_with_other_bytes_is_rewritten(
    converged: Callable[..., Observed], build: BuildInfo
) -> None:
    desired = _desired(("a", 9001, 2))
    observed = replace(converged(desired, build), pool_text='{"hand": "edited"}')
    target = converged_pool(desired, observed, build, None)
    result = plan(desired, observed, build=build, target_pool=target)
    assert result.settings_changed == (
        "config/backends.json differs from the desired state: rewrite",
    )
    assert not result.in_sync


def test_missing_pool_file_means_not_routed_and_no_settings_diff() -> None:
    desired = _desired(("a", 9001, 2))
    observed = _observed(_ctr("a", labels=_labels("a", desired)))
    target = converged_pool(desired, observed, BUILD, None)
    result = plan(desired, observed, build=BUILD, target_pool=target)
    assert result.settings_changed == ()
    assert [(a.kind, a.reason) for a in result.actions] == [(K.REWEIGHT, "not routed")]


def test_empty_desired_and_no_pool_file_writes_the_pool(build: BuildInfo) -> None:
    desired = DesiredState()
    result = plan(desired, Observed(), build=build, target_pool=render_pool(desired))
    assert result.actions == ()
    assert result.settings_changed == (
        "config/backends.json differs from the desired state: rewrite",
    )


@pytest.mark.parametrize(
    ("on_disk", "rendered", "changed"),
    [
        ("same", "same", False),
        ("old", "new", True),
        (None, "new", True),
        ("old", None, False),  # compose_text not given: not compared
    ],
)
def test_compose_changed(on_disk: str | None, rendered: str | None, changed: bool) -> None:
    observed = replace(_observed(_ctr("a"), _ctr("b"), pool=ROUTED), compose_text=on_disk)
    result = plan(DESIRED, observed, build=BUILD, compose_text=rendered)
    assert result.compose_changed is changed
    assert result.in_sync is not changed


# --- drift: somebody changed the engine by hand ------------------------------------------------


def test_drift_container_removed_by_hand_is_created(
    converged: Callable[..., Observed], build: BuildInfo
) -> None:
    desired = _desired(("a", 9001, 2), ("b", 9002, 3))
    observed = converged(desired, build)
    observed = replace(observed, containers=observed.containers[:1])
    result = plan(desired, observed, build=build)
    assert [(a.kind, a.backend, a.reason) for a in result.changes] == [
        (K.CREATE, "b", "no container")
    ]
    assert _action(result, "b").weight_before == 3  # still routed: the pool is not touched yet


def test_drift_container_stopped_by_hand_is_started(
    converged: Callable[..., Observed], build: BuildInfo
) -> None:
    desired = _desired(("a", 9001, 2), ("b", 9002, 3))
    observed = converged(desired, build)
    stopped = replace(observed.containers[1], state="exited", health=None)
    observed = replace(observed, containers=(observed.containers[0], stopped))
    result = plan(desired, observed, build=build)
    assert [(a.kind, a.backend, a.reason) for a in result.changes] == [
        (K.START, "b", "container exited")
    ]
    assert result.changes[0].container_ids == (stopped.id,)


def test_lb_role_containers_are_not_backend_orphans() -> None:
    lb = ObservedContainer(id="lb1", backend="lb", state="running", health="healthy", role="lb")
    observed = _observed(_ctr("a"), _ctr("b"), lb, pool=ROUTED)
    result = plan(DESIRED, observed, build=BUILD)
    backend_actions = [a for a in result.actions if a.role == "backend"]
    assert all(a.kind is K.UNCHANGED for a in backend_actions)
    assert [(a.kind, a.backend) for a in result.actions if a.role == "lb"] == [(K.REMOVE, "lb")]


# --- properties --------------------------------------------------------------------------------

NAMES = ["a", "b", "web-1", "web-2", "api", "x9", "lb", "old"]

_backends = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.integers(1, 65535).filter(lambda p: p not in (8080, 8081)),
        st.integers(0, 1000),
        st.dictionaries(
            st.sampled_from(["A", "B", "MODE"]), st.sampled_from(["1", "x"]), max_size=2
        ),
    ),
    max_size=6,
    unique_by=(lambda t: t[0], lambda t: t[1]),
)


@st.composite
def _desired_states(draw: st.DrawFn) -> DesiredState:
    backends = draw(_backends)
    return DesiredState.model_validate(
        {
            "health": {"path": draw(st.sampled_from(["/health", "/ready"]))},
            "publish_host": draw(st.sampled_from(["127.0.0.1", "0.0.0.0"])),
            "backends": [
                {"name": n, "port": p, "weight": w, "env": env} for n, p, w, env in backends
            ],
        }
    )


_BUILDS = st.builds(
    BuildInfo,
    base_image=st.sampled_from([None, "python:3.12-slim"]),
    context_digest=st.sampled_from(["a" * 64, "b" * 64]),
)


@st.composite
def _observed_states(draw: st.DrawFn, desired: DesiredState) -> Observed:
    """Anything the engine might hold: stale, stopped, duplicated, foreign-named containers."""
    containers = []
    for index in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(NAMES))
        spec = desired.backend(name) or BackendSpec(name=name, port=9000 + index)
        kind = draw(st.sampled_from(["fresh", "stale", "bare"]))
        if kind == "fresh":
            labels = backend_labels(spec, desired, draw(_BUILDS))
        elif kind == "stale":
            labels = backend_labels(spec.model_copy(update={"port": 1}), desired, draw(_BUILDS))
        else:
            labels = {}
        containers.append(
            ObservedContainer(
                id=f"c{index}",
                backend=name,
                state=draw(st.sampled_from(["running", "exited", "created", "dead", "paused"])),
                health=draw(st.sampled_from([None, "healthy", "unhealthy", "starting"])),
                labels=labels,
                endpoint=draw(
                    st.sampled_from([_endpoint(name), f"127.0.0.1:{30000 + index}", None])
                ),
                name=f"p-{name}-{index}",
            )
        )
    pool = None
    if draw(st.booleans()):
        routed = draw(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 1000), max_size=6))
        pool = _pool(**routed)
    return Observed(containers=tuple(containers), pool=pool, pool_text=None, compose_text=None)


def _simulate_apply(
    desired: DesiredState, observed: Observed, result: Plan, build: BuildInfo
) -> Observed:
    """Carry out ``result``'s steps on a model of the engine: what `lbrec apply` does when all
    goes well (new instances get a host port of their own; the pool routes what serves)."""
    containers = {c.id: c for c in observed.containers}
    fresh = 0
    for action in result.actions:
        spec = desired.backend(action.backend)
        for step in action.steps:
            match step.kind:
                case StepKind.RETIRE:
                    for cid in step.container_ids:
                        del containers[cid]
                case StepKind.CREATE:
                    assert spec is not None
                    for _ in range(step.count):
                        fresh += 1
                        containers[f"new{fresh}"] = ObservedContainer(
                            id=f"new{fresh}",
                            backend=spec.name,
                            state="running",
                            health="starting",
                            labels=backend_labels(spec, desired, build),
                            endpoint=f"127.0.0.1:{40000 + fresh}",
                        )
                case StepKind.START:
                    for cid in step.container_ids:
                        c = containers[cid]
                        containers[cid] = replace(
                            c,
                            state="running",
                            health="healthy",
                            endpoint=c.endpoint or "127.0.0.1:1",
                        )
                case StepKind.WAIT | StepKind.ROUTE:
                    pass
    after = Observed(containers=tuple(containers.values()))
    pool = converged_pool(desired, after, build, None)
    return Observed(
        containers=tuple(containers.values()),
        pool=pool,
        pool_text=pool.to_json(),
        compose_text=render_deploy_file(desired, build),
    )


@settings(max_examples=examples(150), deadline=None)
@given(data=st.data(), desired=_desired_states(), build=_BUILDS)
def test_property_one_action_per_backend(
    data: st.DataObject, desired: DesiredState, build: BuildInfo
) -> None:
    observed = data.draw(_observed_states(desired))
    result = plan(desired, observed, build=build)
    keys = [(a.role, a.backend) for a in result.actions]
    assert len(keys) == len(set(keys)), keys
    wanted = {b.name for b in desired.backends}
    assert {a.backend for a in result.actions if a.kind is not K.REMOVE} == wanted
    seen = {c.backend for c in observed.containers}
    if observed.pool is not None:
        seen |= {e.name for e in observed.pool.backends}
    assert {a.backend for a in result.of(K.REMOVE)} == seen - wanted
    # Every observed container is acted on by exactly one action (or left as the one good one).
    ids = [cid for a in result.actions for cid in a.container_ids]
    assert sorted(ids) == sorted(c.id for c in observed.containers)
    order = [a.kind for a in result.actions]
    rank = [K.REMOVE, K.REWEIGHT, K.START, K.SCALE, K.RECREATE, K.CREATE, K.UNCHANGED]
    assert order == sorted(order, key=rank.index)
    assert all(a.reason for a in result.changes)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), desired=_desired_states(), build=_BUILDS)
def test_property_apply_then_plan_is_in_sync(
    data: st.DataObject, desired: DesiredState, build: BuildInfo
) -> None:
    observed = data.draw(_observed_states(desired))
    first = plan(desired, observed, build=build)
    after = _simulate_apply(desired, observed, first, build)
    second = plan(
        desired,
        after,
        build=build,
        target_pool=converged_pool(desired, after, build, None),
        compose_text=render_deploy_file(desired, build),
    )
    assert second.in_sync, second
    for backend in desired.backends:  # exactly the wanted number of instances, all routed
        assert len(after.for_backend(backend.name)) == backend.replicas
    assert [a.backend for a in second.actions] == sorted(b.name for b in desired.backends)


@settings(max_examples=examples(60), deadline=None)
@given(desired=_desired_states(), build=_BUILDS)
def test_property_converged_state_is_in_sync(desired: DesiredState, build: BuildInfo) -> None:
    observed = converged_observed(desired, build)
    pool = converged_pool(desired, observed, build, None)
    result = plan(
        desired, observed, build=build, target_pool=pool, compose_text=observed.compose_text
    )
    assert result.in_sync
    assert all(a.kind is K.UNCHANGED for a in result.actions)
    assert result.settings_changed == ()


# --- the load balancer's own container (proxy.mode: container) ---------------------------------


def _lb(state: str = "running", health: str | None = "healthy", **labels: str) -> ObservedContainer:
    desired = _desired(("a", 9001, 2), proxy={"mode": "container"})
    return ObservedContainer(
        id=f"lb-{state}",
        backend="lb",
        state=state,
        health=health,
        labels={**lb_labels(desired, BUILD), **labels},
        role="lb",
    )


@pytest.mark.parametrize(
    ("containers", "kind", "reason"),
    [
        ((), K.CREATE, "no container"),
        ((_lb(),), K.UNCHANGED, ""),
        ((_lb(state="exited", health=None),), K.START, "container exited"),
        ((_lb(state="paused"),), K.RECREATE, "container paused"),
        ((_lb(health="unhealthy"),), K.RECREATE, "container unhealthy"),
        ((_lb(), _lb(state="exited")), K.RECREATE, "2 load balancer containers"),
        ((_lb(**{"lbrec.field.listen": "x", CONFIG_HASH: "old"}),), K.RECREATE, "listen x -> "),
    ],
)
def test_lb_container_in_container_mode(
    containers: tuple[ObservedContainer, ...], kind: ActionKind, reason: str
) -> None:
    desired = _desired(("a", 9001, 2), proxy={"mode": "container"})
    observed = _observed(_ctr("a", labels=_labels("a", desired)), *containers, pool=_pool(a=2))
    result = plan(desired, observed, build=BUILD)
    (action,) = [a for a in result.actions if a.role == "lb"]
    assert (action.backend, action.kind) == ("lb", kind)
    assert reason in action.reason if reason else action.reason == ""
    assert action.container_ids == tuple(c.id for c in containers)
    assert _action(result, "a").kind is K.UNCHANGED


def test_lb_container_removed_in_host_mode() -> None:
    observed = _observed(_ctr("a"), _ctr("b"), _lb(), pool=ROUTED)
    (action,) = [a for a in plan(DESIRED, observed, build=BUILD).actions if a.role == "lb"]
    assert (action.kind, action.reason, action.container_ids) == (
        K.REMOVE,
        "proxy.mode is host",
        ("lb-running",),
    )
    assert not [
        a for a in plan(DESIRED, _observed(_ctr("a")), build=BUILD).actions if a.role == "lb"
    ]


def _lines_executed(n: int) -> int:
    """Lines of lbrec's own code run to render and plan ``n`` converged backends."""
    import sys

    from lbrec.reconciler.core.engines.auto import render_deploy_file
    from lbrec.reconciler.core.render import converged_pool
    from lbrec.reconciler.core.spec import BackendSpec

    desired = DesiredState(
        backends=tuple(BackendSpec(name=f"b{i}", port=10000 + i) for i in range(n))
    )
    observed = converged_observed(desired, BUILD)
    roots = ("/reconciler/", "/proxy/")
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if not any(root in frame.f_code.co_filename for root in roots):
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        target = converged_pool(desired, observed, BUILD, None)
        compose = render_deploy_file(desired, BUILD)
        the_plan = plan(desired, observed, build=BUILD, target_pool=target, compose_text=compose)
    finally:
        sys.settrace(None)
    assert the_plan.in_sync
    return count


def test_planning_and_rendering_stay_linear() -> None:
    # Operations, not seconds: 4x the backends may cost at most ~4x the lines executed.
    small, large = _lines_executed(100), _lines_executed(400)
    assert large <= 4.4 * small, (small, large)


# --- rollout steps: start first, break last ----------------------------------------------------


def _one(desired: DesiredState, *containers: ObservedContainer) -> Action:
    urls = {c.backend: 1 for c in containers}
    pool = BackendsConfig(
        backends=tuple(
            BackendEntry(name=c.backend, url=f"http://{c.endpoint}", weight=1)
            for c in containers
            if c.endpoint and c.running
        )
    )
    del urls
    (action,) = [a for a in plan(desired, _observed(*containers, pool=pool), build=BUILD).actions]
    return action


def _spec(**fields: object) -> DesiredState:
    return DesiredState.model_validate({"backends": [{"name": "a", "port": 9001, **fields}]})


def _steps(action: Action) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(s.kind.value, s.count, s.container_ids) for s in action.steps]


def _old(n: int, desired: DesiredState) -> list[ObservedContainer]:
    stale = _labels("a", desired, env={"OLD": "1"})
    return [
        _ctr("a", id=f"o{i}", labels=stale, endpoint=f"127.0.0.1:{31000 + i}") for i in range(n)
    ]


def _new(n: int, desired: DesiredState) -> list[ObservedContainer]:
    fresh = _labels("a", desired)
    return [
        _ctr("a", id=f"n{i}", labels=fresh, endpoint=f"127.0.0.1:{32000 + i}") for i in range(n)
    ]


def test_replace_one_instance_creates_routes_then_retires() -> None:
    desired = _spec()
    action = _one(desired, *_old(1, desired))
    assert action.kind is K.RECREATE and action.reason == "env 9a082ca51840 -> 44136fa355b3"
    assert _steps(action) == [
        ("create", 1, ()),
        ("wait", 0, ()),
        ("route", 0, ()),
        ("retire", 0, ("o0",)),
    ]
    assert action.replaced == ("o0",)


def test_replace_in_batches_of_max_parallel() -> None:
    desired = _spec(replicas=3, rollout={"max_parallel": 2})
    action = _one(desired, *_old(3, desired))
    assert _steps(action) == [
        ("create", 2, ()),
        ("wait", 0, ()),
        ("route", 0, ()),
        ("retire", 0, ("o0", "o1")),
        ("create", 1, ()),
        ("wait", 0, ()),
        ("route", 0, ()),
        ("retire", 0, ("o2",)),
    ]


def test_scale_up_creates_beside_and_touches_nothing() -> None:
    desired = _spec(replicas=3)
    action = _one(desired, *_new(1, desired))
    assert (action.kind, action.reason) == (K.SCALE, "replicas 1 -> 3")
    assert _steps(action) == [("create", 2, ()), ("wait", 0, ()), ("route", 0, ())]
    assert action.replaced == ()


def test_scale_down_retires_the_extra_instances_at_once() -> None:
    desired = _spec(replicas=1)
    action = _one(desired, *_new(3, desired))
    assert (action.kind, action.reason) == (K.SCALE, "replicas 3 -> 1")
    assert _steps(action) == [("retire", 0, ("n1", "n2"))]


def test_replace_while_scaling_down_keeps_capacity_until_the_new_one_serves() -> None:
    desired = _spec(replicas=1)
    action = _one(desired, *_old(3, desired))
    assert action.reason.endswith("replicas 3 -> 1")
    assert _steps(action) == [
        ("create", 1, ()),
        ("wait", 0, ()),
        ("route", 0, ()),
        ("retire", 0, ("o0",)),
        ("retire", 0, ("o1", "o2")),
    ]


def test_weight_change_is_shown_beside_a_replace() -> None:
    desired = _spec(weight=5)
    observed = _observed(*_old(1, desired), pool=_pool_at(_old(1, desired), weight=2))
    (action,) = plan(desired, observed, build=BUILD).actions
    assert action.kind is K.RECREATE
    assert action.changes == ("env 9a082ca51840 -> 44136fa355b3", "weight 2 -> 5")


def _pool_at(containers: list[ObservedContainer], *, weight: int) -> BackendsConfig:
    return BackendsConfig(
        backends=tuple(
            BackendEntry(name=c.backend, url=f"http://{c.endpoint}", weight=weight)
            for c in containers
        )
    )


@settings(max_examples=examples(200), deadline=None)
@given(
    old=st.integers(0, 5),
    fresh=st.integers(0, 4),
    replicas=st.integers(1, 5),
    max_parallel=st.integers(1, 4),
)
def test_property_never_fewer_serving_instances_than_before(
    old: int, fresh: int, replicas: int, max_parallel: int
) -> None:
    """Walk the steps: the routed instances never drop below what served before (or below
    the new replicas, if the user lowered them), and the walk ends at exactly ``replicas``."""
    desired = _spec(replicas=replicas, rollout={"max_parallel": max_parallel})
    containers = [*_old(old, desired), *_new(fresh, desired)]
    if not containers:
        return
    action = _one(desired, *containers)
    routed = {c.id for c in containers}
    floor = min(len(routed), replicas)
    batches: dict[int, int] = {}
    created = 0
    for step in action.steps:
        if step.kind is StepKind.CREATE:
            batches[step.batch] = step.count
        elif step.kind is StepKind.ROUTE:
            for _ in range(batches.get(step.batch, 0)):
                created += 1
                routed.add(f"created{created}")
        elif step.kind is StepKind.RETIRE:
            routed -= set(step.container_ids)
            assert len(routed) >= floor, (action.steps, routed)
    assert len(routed) == replicas
    assert not routed & {c.id for c in _old(old, desired)}  # every old instance replaced
    steps = action.steps
    for i, step in enumerate(steps):
        if step.kind is StepKind.CREATE:  # created, then waited for, then routed
            assert [s.kind for s in steps[i + 1 : i + 3]] == [StepKind.WAIT, StepKind.ROUTE]
            after = steps[i + 3] if i + 3 < len(steps) else None
            if after is not None and after.reason == "replaced":
                assert step.count <= max_parallel
