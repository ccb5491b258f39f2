"""backends.json carries each sticky canary's own key (issue 20 finding 13): derived from the
host's secret and the canary's identity, the same on every instance and every step of one
rollout, another for the next rollout."""

from __future__ import annotations

import zlib

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.pool import sticky_secret, sticky_version
from lbrec.reconciler.core.render import Instance, render_pool
from lbrec.reconciler.core.spec import DesiredState, parse_spec

SECRET = bytes(range(32))
SPEC = (
    "project: p\n"
    "backends:\n"
    "  - {name: web, port: 9001, replicas: 2,"
    " rollout: {strategy: canary, sticky: 'cookie:lb-canary'}}\n"
    "  - {name: api, port: 9101}\n"
)


def _desired() -> DesiredState:
    return parse_spec(SPEC)


def _instances(percent: int, canary_ids: tuple[str, ...] = ("c1",)) -> dict[str, list[Instance]]:
    web: list[Instance] = [
        ("http://127.0.0.1:9001", "p-web-1", "stable", 100 - percent, "a" * 12),
        ("http://127.0.0.1:9002", "p-web-2", "stable", 100 - percent, "b" * 12),
    ]
    for i, cid in enumerate(canary_ids):
        web.append((f"http://127.0.0.1:{9010 + i}", f"p-web-n{i}", "canary", percent, cid * 6))
    return {"web": web, "api": [("http://127.0.0.1:9101", "p-api-1", None, None, "d" * 12)]}


def _keys(config: BackendsConfig) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for entry in config.backends:
        out.setdefault(entry.name, set()).add(entry.sticky_key)
    return out


def test_each_sticky_canary_gets_its_rollouts_key() -> None:
    desired = _desired()
    at_5 = render_pool(desired, instances=_instances(5), sticky_secret=SECRET)
    keys = _keys(at_5)
    assert keys["api"] == {None}  # no split, no key
    (key,) = keys["web"]  # one key on every instance of the backend, both versions
    assert key is not None and len(key) == 64
    # The next step of the same rollout keeps the key: clients stay where they were.
    at_25 = render_pool(desired, instances=_instances(25), sticky_secret=SECRET)
    assert _keys(at_25)["web"] == {key}
    # Another rollout (other canary instances), or another host, draws another key.
    other = render_pool(desired, instances=_instances(5, ("c2",)), sticky_secret=SECRET)
    assert _keys(other)["web"] != {key}
    elsewhere = render_pool(desired, instances=_instances(5), sticky_secret=bytes(32))
    assert _keys(elsewhere)["web"] != {key}
    # Without a secret (a caller that has none) nothing is written: the proxy draws its own.
    assert _keys(render_pool(desired, instances=_instances(5)))["web"] == {None}
    # The key never shows in the repr (logs).
    assert key not in repr(at_5)


def test_the_written_key_defeats_the_unkeyed_mapping() -> None:
    """With the reconciler's key, cookie values chosen with the old CRC-32 mapping land on a
    5 % canary about 5 % of the time, not always."""
    config = render_pool(_desired(), instances=_instances(5), sticky_secret=SECRET)
    canary = next(e for e in config.backends if e.version == "canary")
    secret = sticky_secret(canary)
    chosen = [v for v in (f"pick{i}".encode() for i in range(20_000)) if zlib.crc32(v) % 100 < 5]
    assert len(chosen) > 500
    share = sum(sticky_version(v, 5, secret) == "canary" for v in chosen) / len(chosen)
    assert share < 0.15, share
