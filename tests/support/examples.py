"""How many hypothesis examples a property runs: the ``ci`` profile's counts (the default, and
what `.ci/run` runs) or a twentieth of them in the ``dev`` profile of `scripts/test.sh --quick`
(``HYPOTHESIS_PROFILE=dev``). Properties call :func:`examples` with their CI count, since an
explicit ``@settings(max_examples=...)`` wins over any profile."""

from __future__ import annotations

import os

__all__ = ["PROFILE", "examples"]

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


def examples(ci: int) -> int:
    """``ci`` examples in CI; in the dev profile a twentieth, at least 10."""
    if PROFILE == "dev":
        return max(10, ci // 20)
    return ci
