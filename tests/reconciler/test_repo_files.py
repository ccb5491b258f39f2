"""The repository's own docker-compose.yml and config/backends.json are what lbrec renders from
its sample desired-state.yaml (with the Dockerfile's default base image). Regenerate them with
LBREC_UPDATE_GOLDEN=1 when the renderers or the sample change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.engines.compose import render_compose_file
from lbrec.reconciler.core.render import render_pool

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["docker-compose.yml", "config/backends.json"])
def test_committed_generated_files_match_the_sample(name: str) -> None:
    workspace = Workspace.at(REPO / "desired-state.yaml")
    desired = workspace.load()
    variants = []
    # As committed (the Dockerfile's default base image), or as `lbrec up` rewrote it in this
    # checkout with the local base image of scripts/docker-dev.sh.
    for env in ({}, {k: v for k, v in os.environ.items() if k == "LBREC_BASE_IMAGE"}):
        build = workspace.build_info(desired, env=env)
        variants.append(
            {
                "docker-compose.yml": render_compose_file(desired, build),
                "config/backends.json": render_pool(desired).to_json(),
            }[name]
        )
    path = REPO / name
    if os.environ.get("LBREC_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(variants[0])
    assert path.read_text() in variants, f"{name} is stale: rerun with LBREC_UPDATE_GOLDEN=1"
