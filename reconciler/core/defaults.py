"""PURE. Names that the light start of the command line needs without loading the schema."""

from __future__ import annotations

__all__ = ["DEFAULT_FILE", "SCHEMA_FILE", "STACK_FILE", "STATE_DIR"]

DEFAULT_FILE = "desired-state.yaml"
# `lbrec init` writes the JSON Schema here, beside the file, and points editors at it.
SCHEMA_FILE = "desired-state.schema.json"
# What lbrec keeps beside the file (never committed, 0700): the one spelling of its name;
# adapters.workspace.Workspace names every path in it.
STATE_DIR = ".lbrec"
STACK_FILE = f"{STATE_DIR}/stack.yml"  # engine: swarm: what one deploy narrows the stack to
