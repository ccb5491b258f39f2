"""engine: swarm, the pure parts: the schema's rules, the stack file, the plan's shape."""

from __future__ import annotations

import pytest
import yaml

from lbrec.proxy.config import BackendEntry, BackendsConfig
from lbrec.reconciler.core.engines.auto import render_deploy_file
from lbrec.reconciler.core.engines.swarm import swarm_service
from lbrec.reconciler.core.errors import SpecError
from lbrec.reconciler.core.labels import CONFIG_HASH, BuildInfo, backend_labels, config_hash
from lbrec.reconciler.core.plan import ActionKind, StepKind, plan
from lbrec.reconciler.core.spec import DesiredState, parse_spec
from lbrec.reconciler.core.state import Observed, ObservedContainer

BUILD = BuildInfo(base_image=None, context_digest="ctx")
WEB = "  - {name: web, port: 8000, image: acme/web:1.4.2, replicas: 3, weight: 3}\n"
API = "  - {name: api, port: 8100, image: acme/api:2, replicas: 2}\n"


def _swarm(backends: str = WEB + API, head: str = "") -> DesiredState:
    return parse_spec(f"engine: swarm\nproject: shop\n{head}backends:\n{backends}")


def test_compose_is_the_default_and_its_hashes_do_not_move() -> None:
    compose = parse_spec("backends:\n" + WEB)
    assert compose.engine == "compose"
    swarm = _swarm(WEB)
    web_c, web_s = compose.backends[0], swarm.backends[0]
    assert config_hash(web_c, compose, BUILD) != config_hash(web_s, swarm, BUILD)
    # A compose deployment is not replaced by this round: no new field in its hash.
    assert "lbrec.field.engine" not in backend_labels(web_c, compose, BUILD)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("backends:\n  - {name: web, port: 8000}\n", ["backends[0] (web)", "registry:"]),
        (
            "backends:\n  - {name: web, port: 8000, build: {context: ./web}}\n",
            ["backends[0] (web): built from build", "registry:"],
        ),
        ("proxy: {mode: container}\nbackends: []\n", ["proxy.mode: 'container'", "engine: swarm"]),
        ("registry: 'not a registry!'\nbackends: []\n", ["registry"]),
    ],
)
def test_what_swarm_refuses_names_the_field(text: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("engine: swarm\n" + text)
    assert all(w in err.value.message for w in words), err.value.message


def test_a_build_backend_pushes_to_the_registry() -> None:
    desired = _swarm(
        "  - {name: web, port: 8000, build: {context: ./web}}\n", head="registry: 127.0.0.1:5000\n"
    )
    stack = yaml.safe_load(render_deploy_file(desired, BUILD))
    (service,) = stack["services"].values()
    assert service["image"].startswith("127.0.0.1:5000/shop-web:")
    assert service["build"]["context"] == "./web"  # `docker compose build` reads it; stack ignores


def test_the_stack_file_has_one_service_per_backend_version() -> None:
    desired = _swarm()
    stack = yaml.safe_load(render_deploy_file(desired, BUILD))
    web, api = desired.backends
    assert set(stack["services"]) == {
        swarm_service(desired, web, BUILD),
        swarm_service(desired, api, BUILD),
    }
    service = stack["services"][swarm_service(desired, web, BUILD)]
    assert service["deploy"]["replicas"] == 3
    assert service["deploy"]["update_config"]["order"] == "start-first"
    assert service["deploy"]["update_config"]["failure_action"] == "rollback"
    assert service["ports"] == [{"target": 8000, "protocol": "tcp", "mode": "host"}]
    assert service["labels"][CONFIG_HASH] == config_hash(web, desired, BUILD)
    assert "scale" not in service and "restart" not in service
    # A new replica count is a new service: Swarm never picks which routed task stops.
    scaled = _swarm(WEB.replace("replicas: 3", "replicas: 5"))
    assert swarm_service(scaled, scaled.backends[0], BUILD) != swarm_service(desired, web, BUILD)


def _tasks(desired: DesiredState, name: str, n: int, *, first: int = 0) -> list[ObservedContainer]:
    spec = desired.backend(name)
    assert spec is not None
    labels = backend_labels(spec, desired, BUILD)
    return [
        ObservedContainer(
            id=f"{name}-{labels[CONFIG_HASH][:6]}-{i}",
            backend=name,
            state="running",
            health=None,
            labels=labels,
            endpoint=f"127.0.0.1:{31000 + first + i}",
        )
        for i in range(n)
    ]


def _routed(tasks: list[ObservedContainer]) -> BackendsConfig:
    return BackendsConfig(
        backends=tuple(
            BackendEntry(name=t.backend, url=str(t.url), weight=3, instance=t.id) for t in tasks
        )
    )


@pytest.mark.parametrize("replicas", [5, 1])
def test_a_scale_is_a_new_version_beside_the_old_one_then_the_old_leaves_whole(
    replicas: int,
) -> None:
    before = _swarm(WEB)
    old = _tasks(before, "web", 3)
    after = _swarm(WEB.replace("replicas: 3", f"replicas: {replicas}"))
    the_plan = plan(after, Observed(containers=tuple(old), pool=_routed(old)), build=BUILD)
    (action,) = the_plan.changes
    assert action.kind is ActionKind.RECREATE and "replicas 3 -> " in action.reason
    kinds = [s.kind for s in action.steps]
    # One batch: every new task, then route, then every old task at once.
    assert kinds == [StepKind.CREATE, StepKind.WAIT, StepKind.ROUTE, StepKind.RETIRE]
    assert action.steps[0].count == replicas
    assert set(action.steps[-1].container_ids) == {t.id for t in old}


def test_a_new_image_rolls_out_as_one_batch_whatever_max_parallel() -> None:
    before = _swarm(WEB, head="rollout: {max_parallel: 1}\n")
    old = _tasks(before, "web", 3)
    after = _swarm(WEB.replace("1.4.2", "1.5.0"), head="rollout: {max_parallel: 1}\n")
    the_plan = plan(after, Observed(containers=tuple(old), pool=_routed(old)), build=BUILD)
    (action,) = the_plan.changes
    assert [s.kind for s in action.steps].count(StepKind.CREATE) == 1
    assert "image acme/web:1.4.2 -> acme/web:1.5.0" in action.reason


def test_a_task_swarm_replaced_is_routed_again() -> None:
    desired = _swarm(WEB)
    tasks = _tasks(desired, "web", 3)
    routed = _routed(tasks[:2])  # the third is Swarm's replacement of a task killed by hand
    the_plan = plan(desired, Observed(containers=tuple(tasks), pool=routed), build=BUILD)
    (action,) = the_plan.changes
    assert action.kind is ActionKind.REWEIGHT
    assert [s.kind for s in action.steps] == [StepKind.WAIT, StepKind.ROUTE]
    assert action.steps[1].container_ids == (tasks[2].id,)
