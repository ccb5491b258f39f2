"""EDGE. What the loops remember of repairs (engine/repairs.py): `.lbrec/<name>.json`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .files import STATE_DIR, atomic_write, read_text_or_none, state_dir

__all__ = ["RepairFiles", "crash_loop_holds"]


class RepairFiles:
    """``core.crash_loop.RepairRecords`` on the deploy folder: one JSON object per name,
    written atomically (an unreadable file reads as empty: it only holds a history)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def read(self, name: str) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(read_text_or_none(self.folder / STATE_DIR / f"{name}.json") or "{}")
        except (ValueError, OSError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}

    def write(self, name: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        atomic_write(state_dir(self.folder) / f"{name}.json", text)


def crash_loop_holds(folder: Path) -> dict[str, str]:
    """backend -> why the loops hold it for a crash loop (`lbrec status`)."""
    restarts = RepairFiles(folder).read("restarts")
    return {name: str(e["held"]) for name, e in restarts.items() if e.get("held")}
