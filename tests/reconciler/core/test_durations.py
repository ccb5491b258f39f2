"""One duration syntax for every flag (--resync, --interval, --lock-timeout, --debounce...)."""

from __future__ import annotations

import argparse

import pytest

from lbrec.reconciler.commands.cli import _parser as build_parser
from lbrec.reconciler.core.durations import duration_arg, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("0", 0),
        ("0.5", 0.5),
        ("30s", 30),
        ("500ms", 0.5),
        ("2m", 120),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1m30s", 90),
        ("2s500ms", 2.5),
        (" 1.5s ", 1.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-1", "30x", "1m1h", "1s1s", "1 h", "1h-", "ms5"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)
    with pytest.raises(argparse.ArgumentTypeError):
        duration_arg(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["watch", "--resync", "1h30m", "--debounce", "300ms", "--lock-timeout", "5m"],
        ["apply", "--lock-timeout", "30s", "--health-timeout", "2m"],
        ["up", "--interval", "30s", "--resync", "45s"],
    ],
)
def test_every_duration_flag_takes_the_same_syntax(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    values = [
        v
        for k, v in vars(args).items()
        if k in {"resync", "debounce", "lock_timeout", "health_timeout", "interval"}
    ]
    assert values and all(isinstance(v, float) for v in values)
