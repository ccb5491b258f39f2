"""The house rules on layering: a pure core without I/O imports, dependencies pointing inward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = [
    "reconciler/spec.py",
    "reconciler/labels.py",
    "reconciler/state.py",
    "reconciler/plan.py",
    "reconciler/render.py",
    "reconciler/edit.py",
    "reconciler/webhooks.py",
    "reconciler/durations.py",
    "reconciler/canary.py",
    "proxy/config.py",
    "proxy/balancer.py",
    "proxy/stats.py",
]
FORBIDDEN_IN_PURE = {
    "python_on_whales",
    "aiohttp",
    "watchdog",
    "subprocess",
    "asyncio",
    "socket",
    "time",
    "threading",
    "urllib.request",
    "http",
    "os",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    names = _imports(ROOT / module)
    found = {n for n in names for bad in FORBIDDEN_IN_PURE if n == bad or n.startswith(bad + ".")}
    assert not found, f"{module} imports {found}"


def test_proxy_never_imports_the_reconciler() -> None:
    for path in sorted((ROOT / "proxy").glob("*.py")):
        top = {name.split(".")[0] for name in _imports(path)}
        assert "reconciler" not in top, path


def test_only_the_docker_adapter_imports_python_on_whales() -> None:
    users = [
        path.name
        for path in sorted((ROOT / "reconciler").glob("*.py"))
        if any(n.startswith("python_on_whales") for n in _imports(path))
    ]
    assert users == ["docker.py"]
