"""PURE. One duration syntax for every flag: ``30``, ``30s``, ``500ms``, ``2m``, ``1h30m``.

A bare number is seconds. Units ``ms``, ``s``, ``m``, ``h`` may be combined from the largest
down (``1h30m``, ``1m30s``, ``2s500ms``), as Go's and systemd's durations are written.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["DURATION_PATTERN", "duration_arg", "parse_duration"]

_N = r"\d+(\.\d+)?"
# The syntax as one regular expression (JSON Schema, for editors): a bare number, or units
# from the largest down, each at most once.
DURATION_PATTERN = rf"^\s*({_N}|(?=\d)({_N}h)?({_N}m)?({_N}s)?({_N}ms)?)\s*$"

_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_RANK = {"h": 0, "m": 1, "s": 2, "ms": 3}


def parse_duration(text: str) -> float:
    """Seconds of ``text``; ValueError naming the text when it is not a duration."""
    value = text.strip()
    if _NUMBER.match(value):
        return float(value)
    position = 0
    total = 0.0
    last = -1
    for match in _PART.finditer(value):
        if match.start() != position or _RANK[match[2]] <= last:
            break
        total += float(match[1]) * _UNIT[match[2]]
        last = _RANK[match[2]]
        position = match.end()
    if not value or position != len(value):
        raise ValueError(f"{text!r}: expected a duration like 30, 30s, 500ms, 2m or 1h30m")
    return total


def duration_arg(text: str) -> float:
    """``argparse`` ``type=``: the same syntax, an argparse error on bad input."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
