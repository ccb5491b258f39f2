"""`lbrec schema` prints the JSON Schema generated from the pydantic model, never hand-written;
a snapshot catches accidental changes (regenerate with LBREC_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from reconciler.commands.cli import main
from reconciler.core.spec import DesiredState

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
