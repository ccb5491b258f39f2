"""EDGE. The engine chooser: ``engine:`` -> its DockerPort (as uvicorn's protocols/http/auto.py).

The adapter's module is imported when it is chosen (a Compose deploy never loads Swarm's). A
third engine is a module here, its rules in core/engines/, and one line below.
"""

from __future__ import annotations

import importlib

from ...core.ports import DockerPort
from ...core.render import COMPOSE_FILE
from ...core.spec import DesiredState
from ..workspace import Workspace

ADAPTERS = {"compose": "compose:ComposeDocker", "swarm": "swarm:SwarmDocker"}


def engine_for(workspace: Workspace, desired: DesiredState) -> DockerPort:
    """The one Docker factory: the adapter of ``desired.engine`` for a folder and its project."""
    module, _, name = ADAPTERS[desired.engine].partition(":")
    adapter = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    port: DockerPort = adapter(
        folder=workspace.folder, project=desired.project, compose_file=COMPOSE_FILE
    )
    return port
