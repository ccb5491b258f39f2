"""Build the pool a config describes, carrying over what a reload keeps (proxy/server.py swaps
it in). Backends that keep name, URL and container keep their state (health, counters,
keep-alive connections); each route gets its pool (proxy/pool.py ``route_pools``)."""

from __future__ import annotations

from .balancer import SmoothWeightedRoundRobin
from .config import BackendsConfig
from .health_state import HealthState
from .pool import Backend, Pool, instance_keys, rotation_weights, route_pools

__all__ = ["build_pool"]


def build_pool(config: BackendsConfig, digest: str, *, previous: Pool | None) -> Pool:
    """The pool of ``config``; ``previous``: the one serving (None at the start)."""
    backends: dict[str, Backend] = {}
    # Carried over by (name, URL): the key of an instance changes when its backend gains or
    # loses instances, its health, counters and connections do not.
    # And by container: at the same URL another container (an engine restart hands the
    # port to someone else) is a new backend, proven again by its health checks.
    before = (
        {}
        if previous is None
        else {(b.name, b.url, b.container): b for b in previous.backends.values()}
    )
    entries = config.routable  # a frozen entry is never routed (docs/faults.md)
    keys = instance_keys(entries)
    for key, entry in zip(keys, entries, strict=True):
        prev = before.get((entry.name, entry.url, entry.container))
        if prev is not None:
            prev.adopt(entry, key)
            backends[key] = prev
        else:
            start = HealthState.UP if previous is None else HealthState.CHECKING
            backends[key] = Backend(entry, health=start, key=key)
    wait = config.health.wait_healthy_on_add
    weights = rotation_weights(entries, keys)
    healthy = [n for n, b in backends.items() if b.takes_traffic(wait_healthy=wait)]
    if previous is None:
        balancer = SmoothWeightedRoundRobin(weights, healthy=healthy)
    else:
        balancer = previous.balancer.with_config(weights, healthy=healthy)
    pool = Pool(config, backends, balancer, digest)
    pool.routes = route_pools(config, keys, entries, pool, previous)
    return pool
