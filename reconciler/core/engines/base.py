"""PURE. What every engine's rules share: the deploy file written the same way for each (the
document an engine makes, its `$` kept literal, dumped with the generated-file header), and
the defaults of an engine that asks nothing more of a version or an image.

An engine's module subclasses :class:`Rules` and says only what is its own: the services of
its document and the document's top (``name:`` for Compose, ``version:`` for a stack file).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..labels import BuildInfo
from ..render import dump_document, literal
from ..spec import BackendSpec, DesiredState

__all__ = ["Rules"]


class Rules:
    """An engine's rules (a ``ports.EngineRules``), with Compose's answers as the defaults."""

    name = ""
    whole_versions = False

    def version_fields(self, desired: DesiredState, backend: BackendSpec) -> dict[str, str]:
        del desired, backend
        return {}

    def image_reference(self, desired: DesiredState, tag: str) -> str:
        del desired
        return tag  # built on this engine, run on it

    def refusal(self, desired: DesiredState) -> str | None:
        del desired
        return None

    def services(
        self, desired: DesiredState, build: BuildInfo, revisions: Mapping[str, str]
    ) -> Mapping[str, object]:
        """The document's services by name; ``revisions``: backend -> deployed git commit."""
        raise NotImplementedError

    def top(self, desired: DesiredState) -> dict[str, object]:
        """What the document says before its services."""
        raise NotImplementedError

    def deploy_file(
        self,
        desired: DesiredState,
        build: BuildInfo,
        *,
        source: str = "desired-state.yaml",
        revisions: Mapping[str, str] | None = None,
    ) -> str:
        """docker-compose.yml as this engine deploys from it."""
        services = self.services(desired, build, revisions or {})
        document = {**self.top(desired), "services": literal(services)}
        return dump_document(document, source)
