"""Image collection: per repository, what runs and the newest previous image stay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lbrec.reconciler.core.ports import BuiltImage, collectable


def _img(ref: str, day: int) -> BuiltImage:
    return BuiltImage(ref, f"2026-12-{day:02d} 10:00:00 +0000 UTC")


def test_keeps_what_runs_and_the_previous_one() -> None:
    images = [
        _img("p-backend:a", 1),
        _img("p-backend:b", 2),
        _img("p-backend:c", 3),
        _img("p-backend:d", 4),  # deployed
        _img("p-api:x", 1),
        _img("p-api:y", 2),  # deployed
    ]
    gone = collectable(images, {"p-backend:d", "p-api:y"})
    assert gone == ["p-backend:b", "p-backend:a"]  # c is the previous: kept; p-api:x too


def test_nothing_goes_when_all_run_or_keep_previous_covers_it() -> None:
    images = [_img("p-backend:a", 1), _img("p-backend:b", 2)]
    assert collectable(images, {"p-backend:b"}) == []
    assert collectable(images, set(), keep_previous=2) == []


@given(
    st.lists(
        st.tuples(st.sampled_from(["p-backend", "p-api", "p-lb"]), st.integers(1, 28)),
        max_size=12,
        unique=True,
    ),
    st.data(),
)
def test_property_never_removes_a_running_image(
    pairs: list[tuple[str, int]], data: st.DataObject
) -> None:
    images = [_img(f"{repo}:t{day}", day) for repo, day in pairs]
    in_use = set(data.draw(st.lists(st.sampled_from([i.reference for i in images] or ["x"]))))
    gone = collectable(images, in_use)
    assert not set(gone) & in_use
    for repo in {r for r, _ in pairs}:
        kept = [i for i in images if i.reference.startswith(repo + ":") and i.reference not in gone]
        unused = [i for i in kept if i.reference not in in_use]
        assert len(unused) <= 1  # at most one previous image per repository
        if any(i.reference.startswith(repo + ":") and i.reference not in in_use for i in images):
            assert len(unused) == 1
