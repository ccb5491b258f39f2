"""Instances: several entries with one name are the containers of one backend.

The backend keeps its weight's share however many instances it has (the rollout of a new
version runs old and new side by side); each instance is checked and retried on its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from lbrec.proxy.balancer import SmoothWeightedRoundRobin
from lbrec.proxy.config import BackendEntry
from lbrec.proxy.pool import instance_keys, rotation_weights
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc


def _entries(spec: list[tuple[str, int, int]]) -> list[BackendEntry]:
    out = []
    port = 1000
    for name, weight, count in spec:
        for _ in range(count):
            port += 1
            out.append(BackendEntry(name=name, url=f"http://127.0.0.1:{port}", weight=weight))
    return out


def test_keys_are_names_unless_a_name_repeats() -> None:
    entries = _entries([("a", 1, 1), ("b", 2, 2)])
    assert instance_keys(entries) == ["a", "b@127.0.0.1:1002", "b@127.0.0.1:1003"]


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 4)), min_size=1, max_size=5))
def test_each_backend_gets_its_weight_share_over_any_full_period(
    spec: list[tuple[int, int]],
) -> None:
    named = [(f"b{i}", weight, count) for i, (weight, count) in enumerate(spec)]
    entries = _entries(named)
    keys = instance_keys(entries)
    weights = rotation_weights(entries, keys)
    rotation = SmoothWeightedRoundRobin(weights)
    period = sum(weights.values())
    if period == 0:
        assert rotation.pick() is None
        return
    by_key = dict(zip(keys, entries, strict=True))
    picks = Counter(by_key[k].name for k in (rotation.pick() for _ in range(period)) if k)
    total_weight = sum(weight for _, weight, _ in named)
    for name, weight, _ in named:
        assert picks[name] * total_weight == weight * period  # exact share per backend
    per_instance = Counter(rotation.pick() for _ in range(period))
    for name, weight, count in named:
        if weight:  # instances of one backend share evenly
            shares = {per_instance[k] for k in keys if by_key[k].name == name}
            assert len(shares) == 1, (name, shares)
            assert count * shares.pop() == picks[name]


async def test_instances_share_the_backends_traffic_and_survive_a_key_change(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a1, a2, b = await backends("a1"), await backends("a2"), await backends("b")
    p = await proxy(config_doc([("a", a1.url, 1), ("b", b.url, 1)]))
    first = p.info.server.pool.backends["a"]
    doc = config_doc([("a", a1.url, 1), ("a", a2.url, 1), ("b", b.url, 1)])
    p.write(doc)
    for _ in range(100):  # the file watcher reloads it
        if len(p.info.server.pool.backends) == 3:
            break
        await asyncio.sleep(0.05)
    pool = p.info.server.pool
    assert set(pool.backends) == {"a@" + a1.url[7:], "a@" + a2.url[7:], "b"}
    assert pool.backends["a@" + a1.url[7:]] is first  # same object: health and conns kept
    for _ in range(50):  # a2 is new: checking until its first probe passes
        if pool.backends["a@" + a2.url[7:]].health.value == "up":
            break
        await asyncio.sleep(0.05)
    seen: Counter[str] = Counter()
    for _ in range(40):
        async with http.get(p.url + "/x") as response:
            seen[response.headers["X-Backend"]] += 1
    assert seen["b"] == 20 and seen["a1"] == 10 and seen["a2"] == 10, seen
    async with http.get(p.admin_url + "/-/pool") as response:
        listed = [(e["name"], e["url"]) for e in (await response.json())["backends"]]
    assert ("a", a1.url) in listed and ("a", a2.url) in listed


@settings(deadline=None)
@given(
    weight=st.integers(1, 20),
    old=st.integers(1, 4),
    new=st.integers(1, 4),
    percent=st.integers(0, 100),
    other=st.integers(0, 20),
)
def test_a_canary_split_is_exact_per_version(
    weight: int, old: int, new: int, percent: int, other: int
) -> None:
    """Two versions of one backend: each gets its percent of the backend's share, split evenly
    over its own instances; another backend's share is untouched."""
    entries = []
    for i in range(old):
        entries.append(
            BackendEntry(
                name="web",
                url=f"http://127.0.0.1:{2000 + i}",
                weight=weight,
                version="v1",
                percent=100 - percent,
            )
        )
    for i in range(new):
        entries.append(
            BackendEntry(
                name="web",
                url=f"http://127.0.0.1:{3000 + i}",
                weight=weight,
                version="v2",
                percent=percent,
            )
        )
    entries.append(BackendEntry(name="api", url="http://127.0.0.1:4000", weight=other))
    keys = instance_keys(entries)
    weights = rotation_weights(entries, keys)
    period = sum(weights.values())
    rotation = SmoothWeightedRoundRobin(weights)
    picks = Counter(rotation.pick() for _ in range(period))
    by_key = dict(zip(keys, entries, strict=True))
    v2 = sum(n for k, n in picks.items() if k and by_key[k].version == "v2")
    web = sum(n for k, n in picks.items() if k and by_key[k].name == "web")
    assert v2 * 100 == web * percent  # exactly percent % of web's traffic on v2
    assert web * (weight + other) == weight * period  # web keeps its share against api
    for version, count in (("v1", old), ("v2", new)):
        shares = {picks[k] for k in keys if by_key[k].version == version}
        assert len(shares) == 1 and shares.pop() * count == sum(
            picks[k] for k in keys if by_key[k].version == version
        )


def test_canary_percent_must_add_up_and_name_a_version() -> None:
    import pytest

    from lbrec.proxy.config import BackendsConfig

    def doc(*entries: tuple[str, str | None, int | None]) -> dict[str, object]:
        return {
            "backends": [
                {
                    "name": "web",
                    "url": f"http://127.0.0.1:{5000 + i}",
                    "weight": 1,
                    "version": v,
                    "percent": p,
                }
                for i, (_n, v, p) in enumerate(entries)
            ]
        }

    BackendsConfig.model_validate(doc(("a", "v1", 75), ("b", "v2", 25), ("c", "v2", 25)))
    with pytest.raises(ValueError, match="add up to 90, not 100"):
        BackendsConfig.model_validate(doc(("a", "v1", 60), ("b", "v2", 30)))
    with pytest.raises(ValueError, match="different percent"):
        BackendsConfig.model_validate(doc(("a", "v1", 50), ("b", "v2", 50), ("c", "v2", 40)))
    with pytest.raises(ValueError, match="needs a version and a percent"):
        BackendsConfig.model_validate(doc(("a", "v1", 100), ("b", None, None)))


def test_sticky_values_come_from_the_cookie_or_the_header() -> None:
    from lbrec.proxy.pool import sticky_value, sticky_version

    headers = [(b"Host", b"x"), (b"Cookie", b"a=1; lb-canary=u42; b=2"), (b"X-User", b"bob")]
    assert sticky_value((True, b"lb-canary"), headers) == b"u42"
    assert sticky_value((False, b"x-user"), headers) == b"bob"
    assert sticky_value((True, b"missing"), headers) is None
    secret = bytes(range(32))  # the rollout's key (issue 20 finding 13)
    shares = Counter(sticky_version(f"user{i}".encode(), 25, secret) for i in range(4000))
    assert 800 < shares["canary"] < 1200  # about a quarter of the clients
    assert all(
        sticky_version(b"u42", 25, secret) == sticky_version(b"u42", 25, secret) for _ in range(5)
    )


async def test_a_sticky_client_stays_on_one_version(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    stable, canary = await backends("stable"), await backends("canary")
    doc = config_doc([("web", stable.url, 1), ("web", canary.url, 1)])
    for entry, (version, percent) in zip(
        doc["backends"], (("stable", 50), ("canary", 50)), strict=True
    ):
        entry.update(version=version, percent=percent, sticky="cookie:lb-canary")
    p = await proxy(doc)
    for user in ("alice", "bob", "carol", "dave"):
        seen = set()
        for _ in range(100):
            async with http.get(p.url + "/", headers={"Cookie": f"lb-canary={user}"}) as r:
                seen.add(r.headers["X-Backend"])
        assert len(seen) == 1, (user, seen)  # one version for every request of this client
    anonymous: Counter[str] = Counter()
    for _ in range(40):
        async with http.get(p.url + "/") as r:
            anonymous[r.headers["X-Backend"]] += 1
    assert anonymous == {"stable": 20, "canary": 20}  # no cookie: the exact split


async def test_metrics_have_one_series_per_instance_and_the_split(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    one, two = await backends("one"), await backends("two")
    doc = config_doc([("web", one.url, 1), ("web", two.url, 1)])
    for entry, (version, percent) in zip(
        doc["backends"], (("stable", 75), ("canary", 25)), strict=True
    ):
        entry.update(version=version, percent=percent, instance=f"p-web-{version}")
    p = await proxy(doc)
    async with http.get(p.admin_url + "/metrics") as response:
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    weights = [s.labels for s in families["lbrec_proxy_backend_weight"].samples]
    assert sorted(w["container"] for w in weights) == ["p-web-canary", "p-web-stable"]
    split = {
        s.labels["version"]: s.value
        for s in families["lbrec_proxy_backend_version_percent"].samples
    }
    assert split == {"stable": 75.0, "canary": 25.0}


async def test_sticky_holds_after_a_reload_that_starts_the_split(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """A real rollout: the stable instance was there before the split; the reload that adds
    the canary must make it sticky too."""
    stable, canary = await backends("stable"), await backends("canary")
    p = await proxy(config_doc([("web", stable.url, 1)]))
    doc = config_doc([("web", stable.url, 1), ("web", canary.url, 1)])
    for entry, (version, percent) in zip(
        doc["backends"], (("stable", 50), ("canary", 50)), strict=True
    ):
        entry.update(version=version, percent=percent, sticky="cookie:lb-canary")
    p.write(doc)
    for _ in range(100):
        pool = p.info.server.pool
        if len(pool.backends) == 2 and all(b.health.value == "up" for b in pool.backends.values()):
            break
        await asyncio.sleep(0.05)
    assert all(b.sticky is not None for b in p.info.server.pool.backends.values())
    for user in ("alice", "bob", "carol", "dave", "erin"):
        seen = set()
        for _ in range(40):
            async with http.get(p.url + "/", headers={"Cookie": f"lb-canary={user}"}) as r:
                seen.add(r.headers["X-Backend"])
        assert len(seen) == 1, (user, seen)
