"""Shared values for the reconciler's unit tests: a build, a sample desired state, a converged
observation. Everything here is pure data; no test in this folder needs Docker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lbrec.reconciler.core.engines.auto import render_deploy_file
from lbrec.reconciler.core.labels import BuildInfo, backend_labels
from lbrec.reconciler.core.render import converged_pool
from lbrec.reconciler.core.spec import DesiredState, parse_spec
from lbrec.reconciler.core.state import Observed, ObservedContainer

BUILD = BuildInfo(base_image=None, context_digest="c0ffee" * 10 + "abcd")

SAMPLE_YAML = """\
project: demo
listen: 127.0.0.1:8080
admin: 127.0.0.1:8081
health: {path: /health, interval: 2, rise: 2, fall: 3}
backends:
  - {name: backend1, port: 9001, weight: 2}
  - {name: backend2, port: 9002, weight: 3, env: {GREETING: hello, A_FIRST: "1"}}
  - {name: backend3, port: 9003, weight: 0}
"""


def converged_observed(
    desired: DesiredState, build: BuildInfo = BUILD, *, compose: bool = True
) -> Observed:
    """What the engine and the files look like right after a successful apply of ``desired``:
    one instance per backend on its own host port, every one routed."""
    containers = tuple(
        ObservedContainer(
            id=f"id-{b.name}",
            backend=b.name,
            state="running",
            health="healthy",
            labels=backend_labels(b, desired, build),
            name=f"{desired.project}-{b.name}-1",
            endpoint=f"127.0.0.1:{20000 + index}",
        )
        for index, b in enumerate(desired.backends)
    )
    pool = converged_pool(desired, Observed(containers=containers), build, None)
    return Observed(
        containers=containers,
        pool=pool,
        pool_text=pool.to_json(),
        compose_text=render_deploy_file(desired, build) if compose else None,
    )


@pytest.fixture
def build() -> BuildInfo:
    return BUILD


@pytest.fixture
def sample() -> DesiredState:
    return parse_spec(SAMPLE_YAML)


@pytest.fixture
def converged() -> Callable[..., Observed]:
    return converged_observed
