"""PURE. The engine chooser: ``engine:`` -> its rules (as uvicorn's protocols/http/auto.py).

Each engine's module is imported when it is first chosen, by name, so that nothing imports
an engine's module at load time and an engine's module may use the shared renderers freely.
A third engine is a module here (and its adapter in adapters/engines/) and one line below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..labels import BuildInfo
    from ..ports import EngineRules
    from ..spec import DesiredState

ENGINES = {"compose": "compose", "swarm": "swarm"}  # engine: -> module of this package


def engine_rules(engine: str) -> EngineRules:
    rules: EngineRules = importlib.import_module(f"{__package__}.{ENGINES[engine]}").RULES
    return rules


def render_deploy_file(
    desired: DesiredState,
    build: BuildInfo,
    *,
    source: str = "desired-state.yaml",
    revisions: Mapping[str, str] | None = None,
) -> str:
    """docker-compose.yml as ``desired.engine`` deploys from it (a Compose or a stack file)."""
    rules = engine_rules(desired.engine)
    return rules.deploy_file(desired, build, source=source, revisions=revisions)
