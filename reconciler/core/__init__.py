"""PURE. The decisions: the schema, labels, the plan, rendering, edits, the canary judge.

Nothing here does I/O (tests/test_architecture.py enforces it)."""
