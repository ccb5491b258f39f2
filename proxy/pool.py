"""The live pool: one :class:`Backend` per configured name and an immutable :class:`Pool`.

A reload builds a new ``Pool`` and the server swaps it in by assigning one reference. Backends
whose name and URL stay are carried over as the same object, so their health, counters and
keep-alive connections survive; the others are drained.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from .balancer import SmoothWeightedRoundRobin
from .config import BackendEntry, BackendsConfig
from .health_state import HealthState, ProbeResult
from .stats import BackendStats
from .upstream import ConnectionPool

__all__ = ["Backend", "Pool", "instance_keys", "rotation_weights", "route_pools", "sticky_secret"]

# The sticky hash's key when backends.json names none (written by hand, or by an older lbrec):
# random per proxy, drawn at import, so the workers of --workers N (forked after it) share it;
# a restart draws another (the clients of a canary are spread afresh, once).
_PROXY_STICKY_SECRET = os.urandom(32)


def instance_keys(entries: Sequence[BackendEntry]) -> list[str]:
    """PURE. The key of each entry in the pool: its name when the name is unique, else
    ``name@host:port`` (the instances of one backend). Keys are what the rotation, the health
    checks and retries count by; names are what people read."""
    counts = Counter(entry.name for entry in entries)
    return [
        entry.name if counts[entry.name] == 1 else f"{entry.name}@{urlsplit(entry.url).netloc}"
        for entry in entries
    ]


def rotation_weights(entries: Sequence[BackendEntry], keys: Sequence[str]) -> dict[str, int]:
    """PURE. Rotation weights such that each *backend* gets its weight's share, split evenly
    over its instances: weight x L / instances, with L the least common multiple of the
    instance counts (all integers, so the smooth rotation stays exact).

    A backend whose instances carry ``percent`` (a canary: two versions side by side) gives
    each version that share of its weight, split evenly over the version's instances."""
    counts = Counter(entry.name for entry in entries)
    per_version = Counter(
        (entry.name, entry.version) for entry in entries if entry.percent is not None
    )
    split = bool(per_version)
    scale = math.lcm(*counts.values(), *per_version.values()) if counts else 1
    if split:
        scale *= 100
    out: dict[str, int] = {}
    for key, entry in zip(keys, entries, strict=True):
        if entry.percent is not None:
            share = per_version[(entry.name, entry.version)]
            out[key] = entry.weight * entry.percent * scale // (100 * share)
        else:
            out[key] = entry.weight * scale // counts[entry.name]
    # The same rotation with the smallest integers: its period (where shares are exact) stays
    # as short as the weights allow.
    divisor = math.gcd(*out.values())
    if divisor > 1:
        out = {key: weight // divisor for key, weight in out.items()}
    return out


class Backend:
    """Runtime state of one backend; mutated only on the event loop."""

    __slots__ = (
        "conns",
        "container",
        "eject_handle",
        "ejected",
        "errors",
        "fails",
        "health",
        "health_path",
        "host_header",
        "inflight",
        "instance",
        "key",
        "last_check",
        "name",
        "percent",
        "requests",
        "stats",
        "sticky",
        "sticky_secret",
        "url",
        "version",
        "weight",
    )

    def __init__(self, entry: BackendEntry, *, health: HealthState, key: str = "") -> None:
        parts = urlsplit(entry.url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        self.name = entry.name  # the backend (several instances may share it)
        self.container = entry.container  # identity: the container this URL was read from
        self.url = entry.url
        self.adopt(entry, key or entry.name)
        self.host_header = (parts.netloc or f"{host}:{port}").encode("ascii")
        self.conns = ConnectionPool(host, port)
        self.health = health
        self.ejected = False
        self.eject_handle: asyncio.TimerHandle | None = None
        self.fails = 0  # consecutive passive failures
        self.inflight = 0
        self.requests = 0
        self.errors = 0
        self.last_check: ProbeResult | None = None
        self.stats = BackendStats(now=time.time())  # recent figures for the status page

    def adopt(self, entry: BackendEntry, key: str) -> None:
        """Take what a (re)loaded entry may change while its name, URL and container stay:
        the weight, the key (name, or name@host:port), the canary split, the health path."""
        self.key = key  # unique in the pool
        self.weight = entry.weight
        self.instance = entry.instance
        self.version = entry.version
        self.percent = entry.percent
        self.sticky = sticky_key(entry.sticky)
        self.sticky_secret = sticky_secret(entry)
        self.health_path = entry.health_path

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def takes_traffic(self, *, wait_healthy: bool) -> bool:
        if self.ejected or self.health is HealthState.DOWN:
            return False
        return self.health is HealthState.UP or not wait_healthy

    @property
    def state(self) -> str:
        """For display: up, down, checking, ejected (passive) or draining (removed). Down
        wins over ejected: when the active checks fail too, the backend is dead, not flaky."""
        if self.conns.closed:
            return "draining"
        if self.ejected and self.health is not HealthState.DOWN:
            return "ejected"
        return self.health.value

    def drain(self) -> None:
        if self.eject_handle is not None:
            self.eject_handle.cancel()
            self.eject_handle = None
        self.conns.close()


class Pool:
    """What the proxy serves right now: the config, its backends and their rotation."""

    __slots__ = ("_turn", "backends", "balancer", "config", "digest", "fallback", "routes")

    def __init__(
        self,
        config: BackendsConfig,
        backends: Mapping[str, Backend],
        balancer: SmoothWeightedRoundRobin,
        digest: str,
    ) -> None:
        self.config = config
        self.backends = dict(backends)
        self._turn = 0
        self.balancer = balancer
        self.digest = digest
        # Panic routing (as Envoy's panic threshold): when nothing is in rotation, backends
        # that are still "checking" (new, not yet proven, never failed) take the traffic
        # rather than every client getting a 503.
        self.fallback = SmoothWeightedRoundRobin(
            balancer.weights,
            healthy=[n for n, b in self.backends.items() if _unproven(b)],
        )
        # Each route's own pool (routes by host and path, RouteEntry.key -> Pool): the same
        # Backend objects (health, counters and connections shared), a rotation of its own.
        self.routes: dict[str, Pool] = {}

    def pick(self, exclude: Collection[str] = ()) -> Backend | None:
        name = self.balancer.pick(exclude)
        if name is None:
            name = self.fallback.pick(exclude)
        return None if name is None else self.backends[name]

    def sibling(self, backend: Backend, version: str, exclude: Collection[str]) -> Backend | None:
        """Another instance of ``backend`` that runs ``version`` and takes traffic (a sticky
        canary's client), in turn; None when there is none."""
        eligible = set(self.balancer.eligible)
        live = [
            b
            for b in self.backends.values()
            if b.name == backend.name
            and b.version == version
            and b.key in eligible
            and b.key not in exclude
        ]
        if not live:
            return None
        self._turn += 1
        return live[self._turn % len(live)]

    def untried(self, exclude: Collection[str]) -> bool:
        """Whether a backend in rotation is left outside ``exclude`` (a retry could pick it)."""
        return any(key not in exclude for key in self.balancer.eligible)

    def stick(
        self, backend: Backend, headers: Iterable[tuple[bytes, bytes]], exclude: Collection[str]
    ) -> Backend:
        """A sticky canary's pick (``backend.sticky`` set): a client with the cookie/header
        stays on the version its value hashes to (the versions' percent over many clients);
        one without it is not moved."""
        assert backend.sticky is not None
        value = sticky_value(backend.sticky, headers)
        if value is None or backend.percent is None:
            return backend
        # the versions' percents add up to 100: the canary's is derived from this instance's
        canary = backend.percent if backend.version == "canary" else 100 - backend.percent
        wanted = sticky_version(value, canary, backend.sticky_secret)
        if backend.version == wanted:
            return backend
        return self.sibling(backend, wanted, exclude) or backend

    def refresh(self, backend: Backend) -> None:
        """Re-derive one backend's place in the rotation from its health/ejection."""
        wait = self.config.health.wait_healthy_on_add
        self.balancer.set_healthy(backend.key, backend.takes_traffic(wait_healthy=wait))
        self.fallback.set_healthy(backend.key, _unproven(backend))
        for route in self.routes.values():  # health is per instance, shared by its routes
            if backend.key in route.backends:
                route.refresh(backend)


def sticky_key(spec: str | None) -> tuple[bool, bytes] | None:
    """``cookie:NAME`` / ``header:NAME`` as (is_cookie, lower-case name) for the data path."""
    if spec is None:
        return None
    kind, _, name = spec.partition(":")
    return kind == "cookie", name.lower().encode()


def sticky_value(key: tuple[bool, bytes], headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """PURE. The value a sticky canary keys a client on, from a request's headers."""
    is_cookie, name = key
    for header, value in headers:
        lowered = header.lower()
        if is_cookie and lowered == b"cookie":
            for part in value.split(b";"):
                cookie, _, content = part.strip().partition(b"=")
                if cookie.lower() == name:
                    return content
        elif not is_cookie and lowered == name:
            return value
    return None


def sticky_secret(entry: BackendEntry) -> bytes:
    """The key of a sticky canary's hash: the rollout's ``sticky_key`` (the reconciler's, the
    same for every worker and restart), else one derived from this proxy's own random secret."""
    if entry.sticky is None:
        return b""
    if entry.sticky_key is not None:
        return bytes.fromhex(entry.sticky_key)
    name = entry.name.encode()
    return hashlib.blake2b(name, key=_PROXY_STICKY_SECRET, digest_size=32).digest()


def sticky_version(value: bytes, percent: int, secret: bytes) -> str:
    """PURE. ``canary`` for ``percent`` % of the values, else ``stable``: a keyed hash (BLAKE2b,
    a MAC, with the rollout's ``secret``), stable for one value and one key; without the key,
    which values land on the canary cannot be computed (issue 20 finding 13). A value on the
    canary at some percent stays there at any higher percent."""
    digest = hashlib.blake2b(value, key=secret, digest_size=8).digest()
    return "canary" if int.from_bytes(digest, "big") % 100 < percent else "stable"


def _unproven(backend: Backend) -> bool:
    return backend.health is HealthState.CHECKING and not backend.ejected


def route_pools(
    config: BackendsConfig,
    keys: Sequence[str],
    entries: Sequence[BackendEntry],
    pool: Pool,
    previous: Pool | None,
) -> dict[str, Pool]:
    """Each route's pool (routes by host and path): the instances of its backends, the same
    Backend objects as ``pool`` (health, counters and connections shared by every route of an
    instance), weighted among themselves as in the whole pool, each with its own rotation (kept
    across a reload for a route that stays)."""
    wait = config.health.wait_healthy_on_add
    out: dict[str, Pool] = {}
    for route in config.routes or ():
        names = route.backends
        picked = [(k, e) for k, e in zip(keys, entries, strict=True) if e.name in names]
        route_keys = [k for k, _ in picked]
        weights = rotation_weights([e for _, e in picked], route_keys) if picked else {}
        healthy = [k for k in route_keys if pool.backends[k].takes_traffic(wait_healthy=wait)]
        kept = previous.routes.get(route.key) if previous is not None else None
        balancer = (
            kept.balancer.with_config(weights, healthy=healthy)
            if kept is not None
            else SmoothWeightedRoundRobin(weights, healthy=healthy)
        )
        members = {k: pool.backends[k] for k in route_keys}
        out[route.key] = Pool(config, members, balancer, pool.digest)
    return out
