"""proxy/units.py: one duration parser, the two dialects each file format has always accepted.

The reconciler's flags and desired-state.yaml take units in order (``1h30m``); a route's
features (both files) take them in any order. Each dialect is held to its own JSON Schema
pattern (what an editor is told), and the values to the sum of their parts.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbrec.proxy.config import RateLimitSettings
from lbrec.proxy.units import (
    DURATION_PATTERN,
    DURATION_SYNTAX,
    SIZE_PATTERN,
    parse_duration,
    parse_size,
)
from lbrec.reconciler.core.durations import parse_duration as reconciler_duration
from tests.support.examples import examples

_ALPHABET = st.sampled_from([*"0123456789.hms x", "ms", "\t", "\u0663"])
_TEXTS = st.lists(_ALPHABET, max_size=9).map("".join)


def _parses(text: str, *, in_order: bool) -> bool:
    try:
        parse_duration(text, in_order=in_order)
    except ValueError:
        return False
    return True


@settings(max_examples=examples(2000))
@given(_TEXTS)
def test_each_dialect_accepts_what_its_schema_pattern_says(text: str) -> None:
    ascii_text = text.replace("\u0663", "3")  # JSON Schema's \d is ASCII: same shape
    assert _parses(ascii_text, in_order=True) == bool(re.match(DURATION_PATTERN, ascii_text))
    assert _parses(text, in_order=False) == bool(re.match(DURATION_SYNTAX, text))


@pytest.mark.parametrize(
    ("text", "in_order", "seconds"),
    [
        ("30", True, 30.0),
        ("1h30m", True, 5400.0),
        ("2s500ms", True, 2.5),
        (" 1.5s ", True, 1.5),
        ("\u0663s", True, 3.0),  # the reconciler's flags have always read any decimal digit
        ("1h30m", False, 5400.0),
        ("30s1m", False, 90.0),  # a route's durations: any order
        ("1s1s", False, 2.0),
        ("500ms", False, 0.5),
    ],
)
def test_values(text: str, in_order: bool, seconds: float) -> None:
    assert parse_duration(text, in_order=in_order) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "in_order", "message"),
    [
        ("30s1m", True, "'30s1m': expected a duration like 30, 30s, 500ms, 2m or 1h30m"),
        ("1s1s", True, "'1s1s': expected a duration like 30, 30s, 500ms, 2m or 1h30m"),
        ("\u0663s", False, "'\u0663s': expected a duration like 1s, 500ms, 1m or 1h"),
        ("1x", False, "'1x': expected a duration like 1s, 500ms, 1m or 1h"),
        ("", False, "'': expected a duration like 1s, 500ms, 1m or 1h"),
    ],
)
def test_refusals_name_the_text(text: str, in_order: bool, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text, in_order=in_order)
    assert str(caught.value) == message


@settings(max_examples=examples(500))
@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_both_sides_read_the_same_in_order_text(h: int, m: int, s: int, ms: int) -> None:
    """The reconciler's flags and a route's ``per`` read ``1h2m3s4ms`` alike."""
    text = f"{h}h{m}m{s}s{ms}ms"
    want = h * 3600 + m * 60 + s + ms / 1000
    assert reconciler_duration(text) == pytest.approx(want)
    assert parse_duration(text, in_order=False) == pytest.approx(want)
    if 0.001 <= want <= 86400:
        assert RateLimitSettings(requests=1, per=text).per == pytest.approx(want)


@pytest.mark.parametrize(
    ("text", "size"), [("512k", 512 * 1024), ("10m", 10 * 1024**2), ("1GiB", 1024**3), ("7", 7)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert re.match(SIZE_PATTERN, text)


def test_a_size_not_written_as_one_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a size like 512k"):
        parse_size("10 parsecs")
    assert parse_size(12) == 12  # a number is left to the field's own check
