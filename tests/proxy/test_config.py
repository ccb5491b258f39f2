"""backends.json parsing: good, bad and half-written files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lbrec.proxy.config import BackendsConfig, ConfigError, load_config, parse_config
from lbrec.proxy.reload import read_config


def test_defaults_and_roundtrip() -> None:
    config = parse_config('{"backends": [{"name": "a", "url": "http://127.0.0.1:1", "weight": 2}]}')
    assert config.limits.max_header_bytes == 65536
    assert config.preserve_host is True
    assert parse_config(config.to_json()) == config
    assert isinstance(config, BackendsConfig)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"backends": [', "line 1"),  # half-written
        ("", "line 1 column 1"),
        ('{"backends": [{"name": "a", "url": "http://x:1", "weight": -1}]}', "backends[0].weight"),
        ('{"backends": [{"name": "A", "url": "http://x:1", "weight": 1}]}', "backends[0].name"),
        ('{"backends": [{"name": "a", "url": "ftp://x:1", "weight": 1}]}', "http://host:port"),
        ('{"backends": [{"name": "a", "url": "http://x:1", "weight": 1, "x": 1}]}', "x"),
        (
            '{"backends": [{"name": "a", "url": "http://x:1", "weight": 1},'
            ' {"name": "a", "url": "http://x:1", "weight": 1}]}',
            "duplicate",
        ),
        (
            '{"backends": [{"name": "a", "url": "http://x:1", "weight": 1},'
            ' {"name": "a", "url": "http://x:2", "weight": 2}]}',
            "different weights",
        ),
        ('{"version": 2}', "version"),
        ('{"limits": {"max_header_bytes": 10}}', "limits.max_header_bytes"),
    ],
)
def test_bad_files(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="backends.json")
    assert fragment in str(info.value)
    assert "backends.json" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(tmp_path / "nope.json")


def test_read_config_digest(tmp_path: Path) -> None:
    path = tmp_path / "backends.json"
    path.write_text('{"backends": []}')
    first = read_config(path)[1]
    path.write_text('{"backends": [] }')
    assert read_config(path)[1] != first


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_dependency_rules() -> None:
    """proxy/ never imports reconciler/; config.py (shared with the reconciler) no aiohttp."""
    package = Path(__file__).parents[2] / "proxy"
    for source in package.glob("*.py"):
        assert not any(n.split(".")[0] == "reconciler" for n in _imports(source)), source
    config_imports = _imports(package / "config.py")
    assert not any(n.split(".")[0] in {"aiohttp", "asyncio", "watchdog"} for n in config_imports)
