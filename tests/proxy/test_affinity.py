"""proxy/affinity.py: cookies not guessable, pinned while healthy, re-pinned after, weights
holding over new clients; header affinity by weighted rendezvous hashing."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbrec.proxy.affinity import (
    Affinity,
    cookie_value,
    identity_of,
    route_secret,
    set_cookie,
    sticky_from_headers,
)
from lbrec.proxy.balancer import SmoothWeightedRoundRobin
from lbrec.proxy.config import BackendEntry

SECRET = route_secret("ab" * 32, "shop.example.com/")
INSTANCES = {
    "web@127.0.0.1:9001": ("c1a2b3", 3),
    "web@127.0.0.1:9002": ("d4e5f6", 1),
}
ALL = set(INSTANCES)


def rotation(eligible: set[str] | None = None) -> SmoothWeightedRoundRobin:
    weights = {key: weight for key, (_i, weight) in INSTANCES.items()}
    return SmoothWeightedRoundRobin(weights, healthy=sorted(eligible or ALL))


def cookie_of(choice_cookie: tuple[bytes, bytes] | None) -> list[tuple[bytes, bytes]]:
    assert choice_cookie is not None
    pair = choice_cookie[1].split(b";", 1)[0]
    return [(b"Cookie", b"other=1; " + pair)]


def test_a_new_client_gets_a_cookie_and_keeps_its_instance() -> None:
    affinity = Affinity("cookie:lb-web", SECRET, INSTANCES)
    balancer = rotation()
    first = affinity.choose([], ALL, balancer.pick, secure=True)
    assert first.key in ALL and first.cookie is not None
    name, value = first.cookie
    assert name == b"Set-Cookie"
    assert value.endswith(b"; Path=/; HttpOnly; SameSite=Lax; Secure")
    for _ in range(20):
        again = affinity.choose(cookie_of(first.cookie), ALL, balancer.pick, secure=True)
        assert (again.key, again.cookie) == (first.key, None)


def test_a_client_whose_instance_failed_is_re_pinned_with_a_new_cookie() -> None:
    affinity = Affinity("cookie:lb-web", SECRET, INSTANCES)
    pinned = affinity.choose([], ALL, rotation().pick, secure=False)
    assert pinned.key is not None and pinned.cookie is not None
    assert b"Secure" not in pinned.cookie[1]
    left = ALL - {pinned.key}
    moved = affinity.choose(cookie_of(pinned.cookie), left, rotation(left).pick, secure=False)
    assert moved.key in left and moved.cookie is not None and moved.cookie != pinned.cookie
    # and stays on the new one
    again = affinity.choose(cookie_of(moved.cookie), left, rotation(left).pick, secure=False)
    assert (again.key, again.cookie) == (moved.key, None)


def test_a_forged_or_stale_cookie_is_re_pinned() -> None:
    affinity = Affinity("cookie:lb-web", SECRET, INSTANCES)
    for value in (b"127.0.0.1:9001", b"web@127.0.0.1:9001", b"c1a2b3", b"", b"x" * 22):
        choice = affinity.choose(
            [(b"cookie", b"lb-web=" + value)], ALL, rotation().pick, secure=True
        )
        assert choice.cookie is not None  # unknown value: a new pin
    # the cookie name is case-sensitive, its attributes are not read from the request
    assert sticky_from_headers(True, b"lb-web", [(b"Cookie", b"LB-WEB=x")]) is None


def test_weights_hold_over_new_clients() -> None:
    affinity = Affinity("cookie:lb-web", SECRET, INSTANCES)
    balancer = rotation()
    counts = Counter(affinity.choose([], ALL, balancer.pick, secure=True).key for _ in range(4000))
    assert counts["web@127.0.0.1:9001"] == 3000 and counts["web@127.0.0.1:9002"] == 1000


def test_the_value_is_not_guessable_from_the_address() -> None:
    value = cookie_value(SECRET, "c1a2b3")
    assert len(value) == 22
    for part in ("127", "9001", "c1a2b3", "web"):
        assert part not in value
    assert cookie_value(route_secret("cd" * 32, "shop.example.com/"), "c1a2b3") != value
    assert cookie_value(route_secret("ab" * 32, "admin.example.com/"), "c1a2b3") != value
    # the same secret and instance: the same value in every worker and after a reload
    assert cookie_value(route_secret("ab" * 32, "shop.example.com/"), "c1a2b3") == value


def test_without_a_key_the_proxy_draws_its_own() -> None:
    assert route_secret(None, "r") == route_secret(None, "r") != route_secret("ab" * 32, "r")


def test_identity_is_the_container_else_the_url() -> None:
    entry = BackendEntry(name="web", url="http://127.0.0.1:9001", weight=1)
    assert identity_of(entry) == "http://127.0.0.1:9001"
    assert identity_of(entry.model_copy(update={"container": "c1a2b3"})) == "c1a2b3"


def test_set_cookie() -> None:
    assert set_cookie("s", "v", secure=False) == (
        b"Set-Cookie",
        b"s=v; Path=/; HttpOnly; SameSite=Lax",
    )


# -- header affinity --------------------------------------------------------------------------

MANY = {f"web@127.0.0.1:{9000 + i}": (f"c{i}", w) for i, w in enumerate((1, 2, 3, 4))}


def test_header_values_spread_by_weight_and_stay() -> None:
    affinity = Affinity("header:X-User", SECRET, MANY)
    eligible = set(MANY)
    counts: Counter[str | None] = Counter()
    for n in range(10_000):
        head = [(b"x-user", b"user-%d" % n)]
        choice = affinity.choose(head, eligible, lambda: None, secure=False)
        assert choice.cookie is None
        counts[choice.key] += 1
    for i, weight in enumerate((1, 2, 3, 4)):
        assert counts[f"web@127.0.0.1:{9000 + i}"] == pytest.approx(1000 * weight, rel=0.1)


def test_an_instance_leaving_moves_only_its_own_values() -> None:
    affinity = Affinity("header:X-User", SECRET, MANY)
    eligible = set(MANY)
    gone = "web@127.0.0.1:9003"
    moved = 0
    for n in range(3000):
        head = [(b"X-User", b"u%d" % n)]
        before = affinity.choose(head, eligible, lambda: None, secure=False).key
        after = affinity.choose(head, eligible - {gone}, lambda: None, secure=False).key
        if before != gone:
            assert after == before
        else:
            moved += 1
            assert after != gone
    assert moved > 0


def test_a_request_without_the_header_takes_the_rotation() -> None:
    affinity = Affinity("header:X-User", SECRET, MANY)
    assert affinity.choose([], set(MANY), lambda: "picked", secure=False).key == "picked"


def test_nothing_eligible() -> None:
    affinity = Affinity("header:X-User", SECRET, MANY)
    assert affinity.choose([(b"x-user", b"a")], set(), lambda: None, secure=False).key is None
    cookie = Affinity("cookie:s", SECRET, MANY)
    assert cookie.choose([], set(), lambda: None, secure=False).key is None


@given(st.binary(max_size=40), st.sets(st.sampled_from(sorted(MANY)), min_size=1))
def test_rendezvous_always_picks_an_eligible_instance(value: bytes, eligible: set[str]) -> None:
    affinity = Affinity("header:X-User", SECRET, MANY)
    key = affinity.choose([(b"x-user", value)], eligible, lambda: None, secure=False).key
    assert key in eligible


def test_pinned_clients_spread_like_new_ones() -> None:
    """Many clients, each pinned on its first request: the shares of pinned clients are the
    weights (the cookie never skews the rotation)."""
    affinity = Affinity("cookie:lb", SECRET, INSTANCES)
    balancer = rotation()
    cookies = [affinity.choose([], ALL, balancer.pick, secure=True) for _ in range(400)]
    counts: Counter[str | None] = Counter()
    for choice, _ in itertools.product(cookies, range(3)):
        counts[affinity.choose(cookie_of(choice.cookie), ALL, balancer.pick, secure=True).key] += 1
    assert counts["web@127.0.0.1:9001"] == 900 and counts["web@127.0.0.1:9002"] == 300


def test_the_cookie_path_is_the_routes_prefix() -> None:
    """Two routes of one host with the same cookie name keep their own pins: each cookie is
    sent back only under its route's path."""
    api = Affinity("cookie:lb-web", SECRET, INSTANCES, path="/api/")
    choice = api.choose([], list(INSTANCES), lambda: next(iter(INSTANCES)), secure=True)
    assert choice.cookie is not None
    assert b"; Path=/api;" in choice.cookie[1] and choice.cookie[1].endswith(b"; Secure")
    root = Affinity("cookie:lb-web", SECRET, INSTANCES)
    plain = root.choose([], list(INSTANCES), lambda: next(iter(INSTANCES)), secure=False)
    assert plain.cookie is not None and b"; Path=/;" in plain.cookie[1]
