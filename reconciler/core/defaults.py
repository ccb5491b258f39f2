"""PURE. Names that the light start of the command line needs without loading the schema."""

from __future__ import annotations

__all__ = ["DEFAULT_FILE", "SCHEMA_FILE"]

DEFAULT_FILE = "desired-state.yaml"
# `lbrec init` writes the JSON Schema here, beside the file, and points editors at it.
SCHEMA_FILE = "desired-state.schema.json"
