"""Structured logging: one line per event, as text or JSON (``--log-format``).

Call sites pass ``extra={"event": ..., ...}``; the JSON formatter emits those fields next to
``ts``, ``level``, ``logger`` and ``msg``. Nothing logs on the request path unless the access
log is switched on.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Literal

__all__ = ["JsonFormatter", "configure_logging"]

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    fmt: Literal["text", "json"] = "text", *, level: int = logging.INFO, access_log: bool = False
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
