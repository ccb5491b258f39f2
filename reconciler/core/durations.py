"""PURE. One duration syntax for every flag: ``30``, ``30s``, ``500ms``, ``2m``, ``1h30m``.

A bare number is seconds. Units ``ms``, ``s``, ``m``, ``h`` may be combined from the largest
down (``1h30m``, ``1m30s``, ``2s500ms``), as Go's and systemd's durations are written. The
parser is the proxy's (``proxy/units.py``, one for both programs), in its ``in_order`` dialect;
a route's features keep their own, free order, in the same function.
"""

from __future__ import annotations

import argparse

from ...proxy.units import DURATION_PATTERN
from ...proxy.units import parse_duration as _parse

__all__ = ["DURATION_PATTERN", "duration_arg", "parse_duration"]


def parse_duration(text: str) -> float:
    """Seconds of ``text``; ValueError naming the text when it is not a duration."""
    return _parse(text, in_order=True)


def duration_arg(text: str) -> float:
    """``argparse`` ``type=``: the same syntax, an argparse error on bad input."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
