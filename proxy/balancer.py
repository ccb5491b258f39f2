"""Smooth weighted round-robin, exactly as nginx defines it. PURE: no asyncio, no I/O, no clock.

Each pick adds every eligible peer's weight to its ``current`` score, chooses the peer with the
highest score (the first one on ties, in configuration order) and subtracts the total weight
from the winner. Weights 5,1,1 give ``a a b a c a a``. Starting from all-zero scores the
sequence is periodic with period ``sum(weights)`` and every period holds each peer exactly
``weight`` times, so *any* window of ``sum(weights)`` consecutive picks is exact.

A peer is *eligible* when its weight is above zero and it is marked healthy. Whenever the
eligible set or a weight changes, the scores restart from zero: that keeps the exact-share
guarantee from the change on (keeping stale scores could bias the next period). A change that
leaves the eligible set and weights equal keeps the scores, so reloads that only touch
timeouts do not disturb the rotation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

__all__ = ["SmoothWeightedRoundRobin"]


class SmoothWeightedRoundRobin:
    """The rotation state of one pool. Mutable (``pick`` advances it), but never shared."""

    __slots__ = ("_current", "_eligible", "_healthy", "_total", "_weights")

    def __init__(self, weights: Mapping[str, int], *, healthy: Iterable[str] | None = None) -> None:
        for name, weight in weights.items():
            if weight < 0:
                raise ValueError(f"weight of {name!r} must be >= 0, got {weight}")
        self._weights: dict[str, int] = dict(weights)
        self._healthy: set[str] = set(weights if healthy is None else healthy) & set(weights)
        self._current: dict[str, int] = {}
        self._eligible: tuple[tuple[str, int], ...] = ()
        self._total = 0
        self._rebuild()

    # -- queries -------------------------------------------------------------------------------

    @property
    def weights(self) -> Mapping[str, int]:
        return dict(self._weights)

    @property
    def eligible(self) -> tuple[str, ...]:
        """Names that currently take traffic, in configuration order."""
        return tuple(name for name, _ in self._eligible)

    def is_healthy(self, name: str) -> bool:
        return name in self._healthy

    def __len__(self) -> int:
        return len(self._weights)

    # -- the algorithm -------------------------------------------------------------------------

    def pick(self, exclude: Collection[str] = ()) -> str | None:
        """The next peer, or None when no eligible peer is left (all down, drained or excluded).

        ``exclude`` skips peers for this one pick (a retry after a failed attempt), as nginx's
        ``tried`` bitmap does: they neither gain nor lose score.
        """
        current = self._current
        best: str | None = None
        best_score = 0
        total = 0
        for name, weight in self._eligible:
            if exclude and name in exclude:
                continue
            score = current[name] + weight
            current[name] = score
            total += weight
            if best is None or score > best_score:
                best = name
                best_score = score
        if best is not None:
            current[best] = best_score - total
        return best

    # -- changes -------------------------------------------------------------------------------

    def set_healthy(self, name: str, up: bool) -> bool:
        """Mark a peer in or out of rotation. Returns True when that changed anything."""
        if name not in self._weights or (name in self._healthy) == up:
            return False
        if up:
            self._healthy.add(name)
        else:
            self._healthy.discard(name)
        self._rebuild()
        return True

    def with_config(
        self,
        weights: Mapping[str, int],
        *,
        healthy: Iterable[str] | None = None,
        healthy_new: bool = True,
    ) -> SmoothWeightedRoundRobin:
        """A new rotation for ``weights``. Health comes from ``healthy`` when given; otherwise
        names that stay keep their health and new names start healthy when ``healthy_new``.
        The scores are kept when the eligible set and its weights are unchanged."""
        if healthy is None:
            healthy = {
                name
                for name in weights
                if (name in self._healthy if name in self._weights else healthy_new)
            }
        successor = SmoothWeightedRoundRobin(weights, healthy=healthy)
        if successor._eligible == self._eligible:
            successor._current = dict(self._current)
        return successor

    def _rebuild(self) -> None:
        eligible = tuple(
            (name, weight)
            for name, weight in self._weights.items()
            if weight > 0 and name in self._healthy
        )
        if eligible != self._eligible:
            self._eligible = eligible
            self._current = {name: 0 for name, _ in eligible}
            self._total = sum(weight for _, weight in eligible)
