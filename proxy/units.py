"""Quantities people write in lbrec's files and flags: durations (``1m30s``) and sizes (``10m``).

One duration parser serves both programs (the proxy cannot import the reconciler; the
reconciler imports this, as it imports ``config.py``), in the two dialects each file format has
accepted from the start: ``in_order`` (the reconciler's flags and desired-state.yaml: units
from the largest down, each at most once, ``1h30m``) and free order (a route's features and
backends.json: units in any order, repeated, ASCII digits only: ``30s1m``). No I/O, no
pydantic: the command line imports it at start.
"""

from __future__ import annotations

import re

__all__ = [
    "DURATION_PATTERN",
    "DURATION_SYNTAX",
    "SIZE_PATTERN",
    "parse_duration",
    "parse_size",
]

_N = r"\d+(\.\d+)?"
# The in-order syntax as one regular expression (JSON Schema, for editors): a bare number, or
# units from the largest down, each at most once.
DURATION_PATTERN = rf"^\s*({_N}|(?=\d)({_N}h)?({_N}m)?({_N}s)?({_N}ms)?)\s*$"
# The free-order syntax (a route's features): a number of seconds, or units in any order.
DURATION_SYNTAX = r"^\s*([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?(ms|h|m|s))+)\s*$"

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_RANK = {"h": 0, "m": 1, "s": 2, "ms": 3}


def parse_duration(text: str, *, in_order: bool = True) -> float:
    """Seconds of ``text``: a bare number is seconds, units ``ms``, ``s``, ``m``, ``h`` may be
    combined. ``in_order``: from the largest down, each at most once; otherwise in any order
    and ASCII digits only. ValueError naming the text when it is not a duration."""
    value = text.strip()
    if in_order or value.isascii():  # free order: a non-ASCII digit is no digit
        if _NUMBER.fullmatch(value):
            return float(value)
        position, total, last = 0, 0.0, -1
        for match in _PART.finditer(value):
            rank = _RANK[match[2]]
            if match.start() != position or (in_order and rank <= last):
                break
            total += float(match[1]) * _UNIT[match[2]]
            last, position = rank, match.end()
        if value and position == len(value):
            return total
    if in_order:
        raise ValueError(f"{text!r}: expected a duration like 30, 30s, 500ms, 2m or 1h30m")
    raise ValueError(f"{text!r}: expected a duration like 1s, 500ms, 1m or 1h")


_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
SIZE_PATTERN = r"^\s*[0-9]+\s*([kKmMgG]([iI]?[bB])?|[bB])?\s*$"


def parse_size(value: object) -> object:
    """``10m`` (nginx's client_max_body_size: binary units, k m g, an optional b/ib) -> bytes;
    a whole number is bytes. Anything else is left to the field's own check."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"{value!r}: expected a size like 512k, 10m or 1g (or bytes)")
        return int(match[1]) * _SIZE_UNIT[match[2].lower()]
    return value
