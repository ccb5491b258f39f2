"""EDGE. What a deploy folder remembers between passes: the git commit deployed last.

``.lbrec/deployed.json`` is written by `lbrec sync` (and `up --repo`) after a clean pass and
read by `lbrec status`; held (rolled-back) versions and canary state live beside it
(adapters/rollout_control.py). Every write is atomic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...proxy.config import Revision
from ..core.redact import redact_url
from .files import STATE_DIR, atomic_write, read_text_or_none

__all__ = ["DEPLOYED_FILE", "read_deployed", "write_deployed"]

DEPLOYED_FILE = f"{STATE_DIR}/deployed.json"


def read_deployed(folder: Path) -> dict[str, Any] | None:
    """The last deployed commit's record, or None (none yet, or unreadable)."""
    text = read_text_or_none(folder / DEPLOYED_FILE)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("source"), str):  # a record written before credentials were cut
        data["source"] = redact_url(data["source"])
    return data


def write_deployed(folder: Path, revision: Revision, *, branch: str, path: str) -> None:
    """Record ``revision`` as deployed; its ``source`` never with credentials in it."""
    doc = revision.model_dump()
    if doc.get("source"):
        doc["source"] = redact_url(doc["source"])
    doc.update(
        branch=branch,
        path=path,
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    atomic_write(folder / DEPLOYED_FILE, json.dumps(doc, indent=2) + "\n")
