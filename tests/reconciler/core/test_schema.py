"""`lbrec schema` prints the JSON Schema generated from the pydantic model, never hand-written;
a snapshot catches accidental changes (regenerate with LBREC_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.spec import DesiredState, schema_text

SNAPSHOT = Path(__file__).resolve().parents[2] / "golden" / "desired-state.schema.json"


def test_schema_command_prints_the_model_schema(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == DesiredState.model_json_schema()
    assert printed["additionalProperties"] is False  # unknown keys are errors for editors too
    backend = printed["$defs"]["BackendSpec"]
    assert backend["properties"]["weight"]["maximum"] == 1000
    assert set(backend["required"]) == {"name", "port"}


def test_schema_snapshot() -> None:
    text = json.dumps(DesiredState.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("LBREC_UPDATE_GOLDEN"):
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.read_text() == text, "schema changed: rerun with LBREC_UPDATE_GOLDEN=1"


# -- the schema as editors and CI tools use it: check-jsonschema on real files ---------------

_VALID = """\
project: shop
listen: 127.0.0.1:8080
admin: "[::1]:8081"
rollout: {interval: 1m30s, drain_timeout: 500ms, min_healthy_time: 5}
backends:
  - {name: web, port: 8000, env: {LOG_LEVEL: debug, _PRIVATE: "1"}}
  - {name: api, port: 8100, weight: 2, image: acme/api:1.2, replicas: 2}
"""

# Files `lbrec validate` refuses that the schema refuses too (each: what is wrong, the file).
_CAUGHT_BY_BOTH = {
    "env name not a shell name": "backends: [{name: a, port: 1, env: {1BAD: x}}]\n",
    "env name with a dash": "backends: [{name: a, port: 1, env: {MY-VAR: x}}]\n",
    "reserved env name": "backends: [{name: a, port: 1, env: {PORT: '9'}}]\n",
    "listen without port": "listen: 127.0.0.1\nbackends: []\n",
    "listen port out of range": "listen: 127.0.0.1:70000\nbackends: []\n",
    "admin port 0": "admin: 127.0.0.1:0\nbackends: []\n",
    "publish_host with a port": "publish_host: 127.0.0.1:80\nbackends: []\n",
    "lb in container mode": "proxy: {mode: container}\nbackends: [{name: lb, port: 1}]\n",
    "tls in container mode": (
        "proxy: {mode: container}\ntls: {listen: 127.0.0.1:8443, certificates: []}\n"
        "backends: [{name: a, port: 1}]\n"
    ),
    "swarm with the proxy in a container": (
        "engine: swarm\nproxy: {mode: container}\nbackends: [{name: a, port: 1, image: x}]\n"
    ),
    "bad duration": "rollout: {interval: 1s1h}\nbackends: []\n",
    "unknown key": "backend: []\n",
    "weight too high": "backends: [{name: a, port: 1, weight: 5000}]\n",
    "name not a DNS label": "backends: [{name: Web, port: 1}]\n",
}


def _check_jsonschema(schema: Path, document: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(tool), "--schemafile", str(schema), str(document)],
        capture_output=True,
        text=True,
        check=False,
    )


def _validate(document: Path) -> int:
    return main(["validate", "-f", str(document)])


def test_check_jsonschema_refuses_what_validate_refuses(tmp_path: Path) -> None:
    schema = tmp_path / "desired-state.schema.json"
    schema.write_text(schema_text())
    good = tmp_path / "good.yaml"
    good.write_text(_VALID)
    assert _validate(good) == 0
    result = _check_jsonschema(schema, good)
    assert result.returncode == 0, result.stdout + result.stderr
    missed = []
    for what, text in _CAUGHT_BY_BOTH.items():
        path = tmp_path / f"{what.replace(' ', '-')}.yaml"
        path.write_text(text)
        assert _validate(path) == 2, what
        if _check_jsonschema(schema, path).returncode == 0:
            missed.append(what)
    assert missed == [], f"the schema lets these through: {missed}"


def test_lbrec_init_points_editors_at_the_schema_it_writes(tmp_path: Path) -> None:
    spec = tmp_path / "desired-state.yaml"
    assert main(["init", "web:9001:2", "--no-apply", "-f", str(spec)]) == 0
    first = spec.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=desired-state.schema.json"
    schema = tmp_path / "desired-state.schema.json"
    assert json.loads(schema.read_text()) == DesiredState.model_json_schema()
    assert _check_jsonschema(schema, spec).returncode == 0
    spec.write_text(spec.read_text().replace("weight: 2", "weight: 2, env: {HEALTH_PATH: /x}"))
    refused = _check_jsonschema(schema, spec)
    assert refused.returncode == 1 and "HEALTH_PATH" in refused.stdout + refused.stderr
