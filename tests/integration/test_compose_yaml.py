"""What Compose reads back from the compose file lbrec writes is what lbrec wrote: labels and
environment values that YAML 1.2 would take for numbers ("12e4" -> 120000) stay strings.
`docker compose config` is Compose's own parser (no engine call)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lbrec.reconciler.core.engines.compose import render_compose_file
from lbrec.reconciler.core.labels import BuildInfo
from lbrec.reconciler.core.spec import parse_spec

from ..reconciler.core.test_render import YAML12_TRAPS

pytestmark = pytest.mark.docker


def test_compose_reads_every_label_and_env_value_as_written(tmp_path: Path) -> None:
    env = ", ".join(f"V{i}: {json.dumps(v)}" for i, v in enumerate(YAML12_TRAPS))
    desired = parse_spec(
        f"project: yamltrap\nbackends:\n  - {{name: a, port: 9001, env: {{{env}}}}}\n"
    )
    # a digest of the shape that used to be misread (Compose wrote 123456789000000000000)
    build = BuildInfo(base_image="x", context_digest="123456789e12" + "0" * 52)
    text = render_compose_file(desired, build)
    (tmp_path / "docker-compose.yml").write_text(text)
    result = subprocess.run(
        ["docker", "compose", "-p", "yamltrap", "config", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    service = json.loads(result.stdout)["services"]["a"]
    import yaml

    written = yaml.safe_load(text)["services"]["a"]
    assert service["labels"] == written["labels"]
    assert service["labels"]["lbrec.field.build"] == "123456789e12"
    for i, value in enumerate(YAML12_TRAPS):
        assert service["environment"][f"V{i}"] == value, (i, value, service["environment"])
