"""EDGE. Enforce the operator's policy on a commit's desired state (core/policy.py).

Reads what the pure check needs from the deploy folder: each built backend's Dockerfile, after
making sure that its context and Dockerfile resolve inside the deploy folder (a symlink out of
it would let a commit build from any folder of the host).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import PolicyError
from ..core.policy import Policy, Violation, check
from ..core.spec import DesiredState

__all__ = ["enforce", "violations"]

# A Dockerfile's parser directives are at its very top: this much is enough to find them.
_HEAD = 4096


def violations(desired: DesiredState, policy: Policy, folder: Path) -> list[Violation]:
    """Everything in ``desired`` that ``policy`` does not allow, Dockerfiles read from
    ``folder`` (the deploy folder)."""
    found: list[Violation] = []
    dockerfiles: dict[str, str] = {}
    root = folder.resolve()
    for index, backend in enumerate(desired.backends):
        if backend.build is None or not policy.builds:
            continue
        path = folder / backend.build.context / backend.build.dockerfile
        context = (folder / backend.build.context).resolve()
        resolved = path.resolve()
        if not (context.is_relative_to(root) and resolved.is_relative_to(context)):
            found.append(
                Violation(
                    f"backends[{index}].build",
                    f"{backend.build.context}/{backend.build.dockerfile} -> {resolved}",
                    "builds (inside the deploy folder, no symlink out)",
                )
            )
            continue
        try:
            with resolved.open("rb") as handle:
                dockerfiles[backend.name] = handle.read(_HEAD).decode("utf-8", "replace")
        except OSError:
            continue  # missing: the pass reports it with the field (workspace.build_info)
    return found + check(desired, policy, dockerfiles=dockerfiles)


def enforce(desired: DesiredState, policy: Policy, folder: Path, *, source: str) -> None:
    """Raise :class:`PolicyError` naming every violation (field, value, rule)."""
    found = violations(desired, policy, folder)
    if not found:
        return
    listed = "; ".join(str(v) for v in found)
    raise PolicyError(
        f"{source}: refused by the operator's policy: {listed}",
        hint="the policy is the operator's (lbrec sync --policy FILE, docs/security.md); "
        "nothing was applied and the last good commit keeps serving",
        rules=tuple(dict.fromkeys(v.rule.split(" ")[0] for v in found)),
    )
