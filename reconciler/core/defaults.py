"""PURE. Names that the light start of the command line needs without loading the schema."""

from __future__ import annotations

__all__ = ["DEFAULT_FILE"]

DEFAULT_FILE = "desired-state.yaml"
