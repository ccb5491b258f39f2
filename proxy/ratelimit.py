"""PURE. Rate limits of a route (issue 23): a token bucket per client, and a cap on one
client's requests in flight.

- :class:`RateLimiter`: ``requests`` per ``per`` seconds on average, ``burst`` at once, per key
  (the address the proxy trusts, an IPv6 one by its /64, or a header's value:
  :func:`client_key`). Beyond it a 429 with
  ``Retry-After`` (:func:`retry_after`: the seconds until the bucket holds a token again).
- Memory is bounded: the buckets live in an LRU of ``max_keys`` entries (~150 bytes each), so a
  flood of spoofed addresses or invented header values evicts the least recently seen buckets
  and never grows the proxy. An evicted client comes back with a full bucket: under such a
  flood the limit errs on the side of letting a real client through, never of refusing it.
- :class:`ConcurrencyCap`: requests of one key in flight at once; a counter per key *with a
  request in flight*, so bounded by the connections the proxy holds (limits.max_connections).

With ``--workers N`` each worker process keeps its own buckets (no shared memory, no lock on the
hot path), each with the N-th share of the limit (:meth:`RateLimiter.for_workers`): the kernel
spreads *connections* over the workers (SO_REUSEPORT), so a client with many connections gets
close to the whole limit, while a client with a single keep-alive connection lands on one worker
and gets 1/N of it (at most: it is refused early, never late). bench/ratelimit_workers.py and
tests/proxy/test_ratelimit.py measure the error; docs/routes.md tells it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable

from .config import RateLimitSettings

__all__ = [
    "DEFAULT_MAX_KEYS",
    "ConcurrencyCap",
    "RateLimiter",
    "client_key",
    "retry_after",
]

DEFAULT_MAX_KEYS = 65536
_MAX_VALUE = 64  # a longer header value is keyed by its hash (a key's memory is bounded)


def client_key(by: str, client_ip: str, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """PURE. The bucket a request counts against: ``client_ip``, or ``header:NAME``'s value
    (a request without that header counts against its address: leaving it out is no way
    around the limit)."""
    if by.startswith("header:"):
        name = by[len("header:") :].lower().encode("latin-1")
        for header, raw in headers:
            if header.lower() == name:
                value = raw.strip()
                if len(value) > _MAX_VALUE:
                    value = hashlib.blake2b(value, digest_size=16).digest()
                return b"h:" + value
    if ":" in client_ip:  # IPv6: its /64, as one subscriber holds (IPv4-mapped: the IPv4)
        return b"ip:" + _ipv6_key(client_ip)
    return b"ip:" + client_ip.encode("latin-1")


def _ipv6_key(client_ip: str) -> bytes:
    """PURE. The key of an IPv6 client: its /64 (RFC 6177: a subscriber's own prefix, so one
    client cannot take a fresh bucket per address), an IPv4-mapped one as the IPv4 address;
    anything that does not parse is keyed as it is."""
    try:
        address = ipaddress.IPv6Address(client_ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return client_ip.encode("latin-1")
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped).encode("ascii")
    return b"%x/64" % (int(address) >> 64)


def retry_after(wait: float) -> int:
    """``Retry-After`` in whole seconds for a wait (at least 1: 0 would invite a retry storm)."""
    return max(1, math.ceil(wait))


class RateLimiter:
    """Token buckets, one per key, in an LRU of at most ``max_keys``. Not thread-safe: one per
    route and worker, used on the event loop."""

    __slots__ = ("_buckets", "burst", "evicted", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate  # tokens per second
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> [tokens, the time they were counted]
        self._buckets: OrderedDict[bytes, list[float]] = OrderedDict()
        self.evicted = 0  # buckets dropped for room (a metric: a flood of keys shows here)

    @classmethod
    def from_settings(
        cls, settings: RateLimitSettings, *, workers: int = 1, max_keys: int = DEFAULT_MAX_KEYS
    ) -> RateLimiter:
        """The limiter of one worker of ``workers``: the N-th share of rate and burst."""
        burst = settings.burst if settings.burst is not None else settings.requests
        return cls.for_workers(settings.requests / settings.per, burst, workers, max_keys=max_keys)

    @classmethod
    def for_workers(
        cls, rate: float, burst: float, workers: int, *, max_keys: int = DEFAULT_MAX_KEYS
    ) -> RateLimiter:
        workers = max(1, workers)
        return cls(rate / workers, max(1.0, burst / workers), max_keys=max_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: bytes, now: float) -> float:
        """How long until ``key`` has a token at ``now`` (0.0: it has one); takes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: bytes, now: float) -> float:
        """Take one token for ``key`` at ``now`` (monotonic seconds): 0.0 when the request may
        pass, else how long until a token is there (for Retry-After)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
                self.evicted += 1
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        self._buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


class ConcurrencyCap:
    """At most ``limit`` requests of one key in flight. ``acquire`` before the request goes to a
    backend (False: answer 429), ``release`` exactly once when its answer is done or failed."""

    __slots__ = ("_inflight", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit >= 1")
        self.limit = limit
        self._inflight: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    def acquire(self, key: bytes) -> bool:
        count = self._inflight.get(key, 0)
        if count >= self.limit:
            return False
        self._inflight[key] = count + 1
        return True

    def release(self, key: bytes) -> None:
        count = self._inflight.get(key, 0)
        if count <= 1:
            self._inflight.pop(key, None)
        else:
            self._inflight[key] = count - 1

    def held(self, key: bytes) -> int:
        return self._inflight.get(key, 0)
