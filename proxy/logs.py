"""Structured logging: one line per event, as text or JSON (``--log-format``).

Call sites pass ``extra={"event": ..., ...}``; the JSON formatter emits those fields next to
``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and ``msg``. Every line has an
``event`` (``log`` when the call site named none), so ``jq 'select(.event == "reload")'``
filters any of them. Nothing logs on the request path unless the access log is switched on.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "iso_time"]

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def iso_time(created: float) -> str:
    """``2026-12-04T21:08:05.123Z``: ISO 8601, UTC, milliseconds."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": "log",
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-04T21:08:05.123Z INFO lbrec.proxy: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


def configure_logging(
    fmt: Literal["text", "json"] = "text",
    *,
    level: int = logging.INFO,
    access_log: bool = False,
    name: str = "proxy",
) -> logging.Logger:
    """The one logging set-up of both programs: text or JSON lines on stderr for every
    ``lbrec`` logger; returns ``lbrec.<name>``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    ours = logging.getLogger("lbrec")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    # Third-party warnings (aiohttp, asyncio) come out in the same format, one per line.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # watchdog warns about its own shutdown race ("queue_events() called when the thread is
    # inactive"), which is harmless noise.
    logging.getLogger("watchdog").setLevel(logging.CRITICAL)
    logging.getLogger("lbrec.proxy.access").setLevel(
        logging.INFO if access_log else logging.WARNING
    )
    return logging.getLogger(f"lbrec.{name}")
