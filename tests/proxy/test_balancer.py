"""The smooth weighted round-robin: exact sequences, exact shares, health and weight changes."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbrec.proxy.balancer import SmoothWeightedRoundRobin
from tests.support.examples import examples


def picks(balancer: SmoothWeightedRoundRobin, n: int) -> list[str | None]:
    return [balancer.pick() for _ in range(n)]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"a": 5, "b": 1, "c": 1}, "a a b a c a a"),
        ({"a": 1, "b": 1}, "a b a b"),
        ({"a": 2, "b": 3}, "b a b a b"),
        ({"a": 3, "b": 1}, "a a b a"),
        ({"a": 1, "b": 0, "c": 1}, "a c a c"),
        ({"a": 4, "b": 2, "c": 1}, "a b a c a b a"),
    ],
)
def test_exact_sequences(weights: dict[str, int], expected: str) -> None:
    balancer = SmoothWeightedRoundRobin(weights)
    assert " ".join(str(p) for p in picks(balancer, len(expected.split()))) == expected


def test_empty_and_all_down() -> None:
    assert SmoothWeightedRoundRobin({}).pick() is None
    balancer = SmoothWeightedRoundRobin({"a": 1, "b": 2})
    balancer.set_healthy("a", False)
    balancer.set_healthy("b", False)
    assert balancer.pick() is None
    assert SmoothWeightedRoundRobin({"a": 0}).pick() is None


def test_unhealthy_leaves_rotation_and_rest_stays_exact() -> None:
    balancer = SmoothWeightedRoundRobin({"a": 5, "b": 1, "c": 1})
    picks(balancer, 3)
    assert balancer.set_healthy("a", False)
    assert picks(balancer, 4) == ["b", "c", "b", "c"]
    assert not balancer.set_healthy("a", False)  # no change
    balancer.set_healthy("a", True)
    assert picks(balancer, 7) == ["a", "a", "b", "a", "c", "a", "a"]


def test_exclude_skips_for_one_pick() -> None:
    balancer = SmoothWeightedRoundRobin({"a": 1, "b": 1, "c": 1})
    assert balancer.pick(exclude={"a"}) == "b"
    assert balancer.pick(exclude={"a", "b", "c"}) is None


def test_with_config_keeps_health_and_scores() -> None:
    balancer = SmoothWeightedRoundRobin({"a": 5, "b": 1, "c": 1})
    assert picks(balancer, 2) == ["a", "a"]
    same = balancer.with_config({"a": 5, "b": 1, "c": 1})
    assert picks(same, 5) == ["b", "a", "c", "a", "a"]  # continues the period
    balancer.set_healthy("b", False)
    grown = balancer.with_config({"a": 1, "b": 1, "d": 1}, healthy_new=False)
    assert not grown.is_healthy("b") and not grown.is_healthy("d") and grown.is_healthy("a")
    assert picks(grown, 2) == ["a", "a"]
    grown.set_healthy("d", True)
    assert picks(grown, 4) == ["a", "d", "a", "d"]


def test_weight_zero_drains() -> None:
    balancer = SmoothWeightedRoundRobin({"a": 1, "b": 1})
    drained = balancer.with_config({"a": 1, "b": 0})
    assert set(picks(drained, 10)) == {"a"}
    assert drained.eligible == ("a",)


def test_negative_weight_rejected() -> None:
    with pytest.raises(ValueError, match="weight"):
        SmoothWeightedRoundRobin({"a": -1})


def test_balancer_is_pure() -> None:
    source = Path(__file__).parents[2] / "proxy" / "balancer.py"
    tree = ast.parse(source.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= {"__future__", "collections"}, imported


weights_st = st.dictionaries(
    st.sampled_from("abcdefgh"), st.integers(min_value=0, max_value=12), min_size=1, max_size=6
)


@settings(max_examples=examples(150), deadline=None)
@given(weights=weights_st, offset=st.integers(min_value=0, max_value=40))
def test_any_window_is_exact(weights: dict[str, int], offset: int) -> None:
    balancer = SmoothWeightedRoundRobin(weights)
    total = sum(weights.values())
    if total == 0:
        assert balancer.pick() is None
        return
    seq = picks(balancer, offset + 2 * total)
    for start in range(offset, offset + total + 1):
        window = Counter(seq[start : start + total])
        assert window == Counter({n: w for n, w in weights.items() if w > 0})


@settings(max_examples=examples(150), deadline=None)
@given(weights=weights_st)
def test_smooth(weights: dict[str, int]) -> None:
    """After k picks each peer has about k*w/W picks: never more than max(1, (n-1)w/W) off
    (plain round-robin over a list with repeats would be off by up to w)."""
    balancer = SmoothWeightedRoundRobin(weights)
    total = sum(weights.values())
    live = sum(1 for w in weights.values() if w > 0)
    counts: Counter[str | None] = Counter()
    for k in range(1, 2 * total + 1):
        counts[balancer.pick()] += 1
        for name, weight in weights.items():
            bound = max(1.0, (live - 1) * weight / total)
            assert abs(counts[name] - k * weight / total) <= bound + 1e-9


@settings(max_examples=examples(100), deadline=None)
@given(
    weights=weights_st,
    flaps=st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.booleans(), st.integers(0, 9)), max_size=8
    ),
)
def test_health_flaps_then_exact(
    weights: dict[str, int], flaps: list[tuple[str, bool, int]]
) -> None:
    balancer = SmoothWeightedRoundRobin(weights)
    for name, up, gap in flaps:
        balancer.set_healthy(name, up)
        picks(balancer, gap)
    healthy = {n: w for n, w in weights.items() if w > 0 and balancer.is_healthy(n)}
    total = sum(healthy.values())
    if not total:
        assert balancer.pick() is None
        return
    seq = picks(balancer, 2 * total)
    for start in range(total + 1):
        assert Counter(seq[start : start + total]) == Counter(healthy)


@settings(max_examples=examples(100), deadline=None)
@given(before=weights_st, after=weights_st, gap=st.integers(0, 20))
def test_reweight_then_exact(before: dict[str, int], after: dict[str, int], gap: int) -> None:
    balancer = SmoothWeightedRoundRobin(before)
    picks(balancer, gap)
    balancer = balancer.with_config(after)
    expected = {n: w for n, w in after.items() if w > 0}
    total = sum(expected.values())
    if not total:
        assert balancer.pick() is None
        return
    seq = picks(balancer, 2 * total)
    for start in range(total + 1):
        assert Counter(seq[start : start + total]) == Counter(expected)
