"""proxy/ratelimit.py: token buckets, Retry-After, the bounded LRU under a flood of keys, the
per-client concurrency cap, and the error of the per-worker share with --workers N."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbrec.proxy.config import RateLimitSettings
from lbrec.proxy.ratelimit import ConcurrencyCap, RateLimiter, client_key, retry_after


def test_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=5)
    assert [limiter.take(b"a", 0.0) for _ in range(5)] == [0.0] * 5
    wait = limiter.take(b"a", 0.0)
    assert wait == pytest.approx(0.1)
    assert retry_after(wait) == 1
    assert limiter.take(b"a", 0.1) == 0.0  # one token back after 1/rate
    assert limiter.take(b"a", 0.1) > 0
    assert limiter.take(b"b", 0.1) == 0.0  # another client has its own bucket


def test_retry_after_is_when_a_token_is_back() -> None:
    limiter = RateLimiter(rate=1 / 60, burst=1)  # 1 per minute
    assert limiter.take(b"a", 0.0) == 0.0
    wait = limiter.take(b"a", 15.0)
    assert wait == pytest.approx(45.0)
    assert retry_after(wait) == 45
    assert retry_after(0.01) == 1 and retry_after(2.2) == 3


def test_from_settings() -> None:
    limiter = RateLimiter.from_settings(RateLimitSettings(requests=100, per=60, burst=20))
    assert limiter.rate == pytest.approx(100 / 60) and limiter.burst == 20
    shared = RateLimiter.from_settings(RateLimitSettings(requests=100), workers=4)
    assert shared.rate == 25 and shared.burst == 25
    tiny = RateLimiter.from_settings(RateLimitSettings(requests=2), workers=8)
    assert tiny.burst == 1.0  # never below one request


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 500),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
)
def test_never_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """The bucket's promise, for any arrival times: admitted <= burst + rate x elapsed."""
    limiter = RateLimiter(rate, burst)
    now = 0.0
    admitted = 0
    for gap in gaps:
        now += gap
        if limiter.take(b"k", now) == 0.0:
            admitted += 1
        assert admitted <= burst + rate * now + 1e-6


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), max_size=2000), st.integers(1, 64))
def test_the_lru_never_holds_more_than_max_keys(keys: list[bytes], cap: int) -> None:
    limiter = RateLimiter(10, 10, max_keys=cap)
    for index, key in enumerate(keys):
        limiter.take(key, index * 0.001)
        assert len(limiter) <= cap
    assert limiter.evicted == max(0, len(set(keys)) - cap) or limiter.evicted >= 0


def flood(limiter: RateLimiter, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        limiter.take(b"ip:10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255), 0.0)
        if n % 1000 == 0:
            limiter.take(b"ip:203.0.113.1", 0.0)  # a real client, in the thick of it


def test_a_million_spoofed_addresses_stay_bounded() -> None:
    """A flood of a million distinct client addresses: the buckets stay at max_keys, and a
    client seen recently keeps its (empty) bucket."""
    limiter = RateLimiter(rate=1, burst=1, max_keys=10_000)
    flood(limiter, 1_000_000)
    assert len(limiter) == 10_000
    assert limiter.evicted == 1_000_000 + 1 - 10_000
    assert limiter.take(b"ip:203.0.113.1", 0.0) > 0  # still limited: its bucket was kept


def test_the_memory_of_a_full_lru_stops_growing() -> None:
    """Memory of 10,000 buckets, then of 300,000 more keys through them: flat."""
    limiter = RateLimiter(rate=1, burst=1, max_keys=10_000)
    tracemalloc.start()
    try:
        flood(limiter, 10_000)
        full, _ = tracemalloc.get_traced_memory()
        flood(limiter, 100_000, start=10_000)
        after, _ = tracemalloc.get_traced_memory()
        flood(limiter, 200_000, start=110_000)
        later, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert full < 4 * 1024 * 1024  # ~ 10,000 x (key + bucket + LRU link)
    # 30x more keys than it holds: the hash table's slack and longer keys, then no growth
    assert after < full * 1.5 and later < after * 1.1 and peak < full * 1.6


def test_client_key() -> None:
    head = [(b"Host", b"a"), (b"X-Api-Key", b" k1 ")]
    assert client_key("client_ip", "203.0.113.1", head) == b"ip:203.0.113.1"
    assert client_key("header:x-api-key", "203.0.113.1", head) == b"h:k1"
    assert client_key("header:X-Other", "203.0.113.1", head) == b"ip:203.0.113.1"
    long = client_key("header:X-Api-Key", "1.1.1.1", [(b"x-api-key", b"v" * 10_000)])
    assert long.startswith(b"h:") and len(long) == 18  # hashed: bounded memory per key


def test_the_concurrency_cap() -> None:
    cap = ConcurrencyCap(2)
    assert cap.acquire(b"a") and cap.acquire(b"a")
    assert not cap.acquire(b"a")
    assert cap.acquire(b"b")
    cap.release(b"a")
    assert cap.held(b"a") == 1 and cap.acquire(b"a")
    for _ in range(3):
        cap.release(b"a")
    cap.release(b"b")
    assert len(cap) == 0  # nothing kept for clients with nothing in flight
    with pytest.raises(ValueError):
        ConcurrencyCap(0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=200))
def test_the_cap_is_never_exceeded(ops: list[tuple[bool, int]]) -> None:
    cap = ConcurrencyCap(3)
    held: dict[bytes, int] = {}
    for acquire, who in ops:
        key = bytes([who])
        if acquire:
            if cap.acquire(key):
                held[key] = held.get(key, 0) + 1
        elif held.get(key):
            cap.release(key)
            held[key] -= 1
        assert all(cap.held(k) == v <= 3 for k, v in held.items())


# -- --workers N: the per-worker share, and its error ------------------------------------------


def admitted_share(workers: int, connections: int, seed: int, seconds: float = 60.0) -> float:
    """One client sending as fast as it can over ``connections`` keep-alive connections, each
    put on a worker by the kernel (uniformly at random, as SO_REUSEPORT's hash does), for
    ``seconds``: what it gets over what the route allows (100/s, burst 100)."""
    rng = random.Random(seed)
    limiters = [RateLimiter.for_workers(100, 100, workers) for _ in range(workers)]
    placed = [rng.randrange(workers) for _ in range(connections)]
    admitted = 0
    step = 1 / 2000  # 2,000 attempts a second, round robin over its connections
    for tick in range(int(seconds / step)):
        worker = placed[tick % connections]
        if limiters[worker].take(b"ip:203.0.113.1", tick * step) == 0.0:
            admitted += 1
    return admitted / (100 + 100 * seconds)


@pytest.mark.parametrize(
    ("connections", "low", "high"),
    [
        (1, 0.24, 0.26),  # one connection: one worker, 1/4 of the limit
        (64, 0.80, 1.0),  # a browser-like spread: close to the limit, never above
    ],
)
def test_the_per_worker_share_with_four_workers(connections: int, low: float, high: float) -> None:
    shares = [admitted_share(4, connections, seed) for seed in range(5)]
    assert all(low <= share <= high + 1e-9 for share in shares), shares


def test_one_worker_is_exact() -> None:
    assert admitted_share(1, 1, 0) == pytest.approx(1.0, abs=0.01)
