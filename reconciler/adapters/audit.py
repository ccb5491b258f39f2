"""EDGE. The audit log of passes (``.lbrec/audit.jsonl``, JSON lines) and the notify webhook.

Every pass appends one line under the project lock (one ``write`` with O_APPEND, fsynced),
so a reader never sees half a line; past ``MAX_BYTES`` the log rolls over to
``audit.jsonl.1`` (one old file kept). `lbrec status --history` reads it back. A ``notify:``
webhook gets the same record as JSON by POST; a receiver that is down or slow costs at most
its timeout and is only logged: it never fails a pass.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["AUDIT_FILE", "MAX_BYTES", "append_record", "notify", "read_history"]

AUDIT_FILE = ".lbrec/audit.jsonl"
MAX_BYTES = 1 << 20

_log = logging.getLogger("lbrec.audit")


def append_record(folder: Path, record: Mapping[str, Any]) -> None:
    path = folder / AUDIT_FILE
    path.parent.mkdir(exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        if path.stat().st_size + len(line) > MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(folder: Path, last: int) -> list[dict[str, Any]]:
    """The ``last`` records, oldest first (both files; an unreadable line is skipped)."""
    path = folder / AUDIT_FILE
    lines: list[str] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            lines += part.read_text().splitlines()
        except FileNotFoundError:
            continue
    out = []
    for line in lines[-last:] if last > 0 else []:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


def notify(url: str, record: Mapping[str, Any], *, timeout: float) -> str | None:
    """POST ``record`` to ``url``; None when a 2xx came back, else why not (also logged)."""
    body = json.dumps(record, sort_keys=True).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "lbrec-notify"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if 200 <= response.status < 300:
                return None
            problem = f"answered {response.status}"
    except urllib.error.HTTPError as err:
        problem = f"answered {err.code}"
    except (OSError, ValueError) as err:
        problem = str(getattr(err, "reason", None) or err)
    _log.warning("notify %s: %s", url, problem, extra={"event": "notify_failed", "url": url})
    return problem
