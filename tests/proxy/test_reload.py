"""Hot reload: atomic swaps under load, bad files, added backends wait for health."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from pathlib import Path

import aiohttp

from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.reload import ConfigWatcher
from tests.proxy.conftest import (
    BackendFactory,
    ProxyFactory,
    RunningProxy,
    config_doc,
    write_config,
)


async def _pool(http: aiohttp.ClientSession, p: RunningProxy) -> dict[str, object]:
    async with http.get(p.admin_url + "/-/pool") as response:
        assert response.status == 200
        doc: dict[str, object] = await response.json()
        return doc


async def _wait_for(predicate: collections.abc.Callable[[], object], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _counts(http: aiohttp.ClientSession, url: str, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        async with http.get(url) as response:
            assert response.status == 200
            counts[response.headers["X-Backend"]] += 1
    return counts


async def test_reweight_takes_effect_within_a_second(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    p = await proxy(config_doc([("a", a.url, 1), ("b", b.url, 1)], generation="g1"))
    p.write(config_doc([("a", a.url, 1), ("b", b.url, 4)], generation="g2"))
    start = asyncio.get_running_loop().time()
    server = p.info.server
    await _wait_for(lambda: server.pool.config.generation == "g2", 1.0)
    assert asyncio.get_running_loop().time() - start < 1.0
    assert await _counts(http, p.url + "/x", 50) == {"a": 10, "b": 40}
    assert (await _pool(http, p))["generation"] == "g2"


async def test_invalid_file_keeps_old_pool(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a = await backends("a")
    p = await proxy(config_doc([("a", a.url, 1)], generation="good"))
    server = p.info.server
    p.config_path.write_text('{"backends": [{"name": "a", "url": ')  # half-written
    await _wait_for(lambda: server.reload_errors >= 1, 3.0)
    p.write({"backends": [{"name": "a", "url": a.url, "weight": -3}]})  # invalid
    await _wait_for(lambda: server.reload_errors >= 2, 3.0)
    assert server.pool.config.generation == "good"
    assert await _counts(http, p.url + "/x", 5) == {"a": 5}
    doc = await _pool(http, p)
    assert "backends[0].weight" in str(doc["last_reload_error"])
    p.write(config_doc([], generation="empty-on-purpose"))  # a *valid* empty pool is obeyed
    await _wait_for(lambda: server.pool.config.generation == "empty-on-purpose", 3.0)


async def test_added_backend_waits_for_health(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    b.healthy = False
    p = await proxy(config_doc([("a", a.url, 1)]))
    server = p.info.server
    p.write(config_doc([("a", a.url, 1), ("b", b.url, 1)]))
    await _wait_for(lambda: "b" in server.pool.backends, 3.0)
    assert server.pool.backends["b"].state == "checking"
    assert await _counts(http, p.url + "/x", 6) == {"a": 6}
    b.healthy = True
    await _wait_for(lambda: server.pool.backends["b"].state == "up", 3.0)
    assert await _counts(http, p.url + "/x", 6) == {"a": 3, "b": 3}


async def test_reload_under_load_zero_failures(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """~3000 requests from 16 clients while backends.json is rewritten 40 times."""
    pool = [await backends(name) for name in ("a", "b", "c", "d")]
    urls = {b.name: b.url for b in pool}
    doc = config_doc([("a", urls["a"], 1), ("b", urls["b"], 1)], generation="start")
    doc["health"]["wait_healthy_on_add"] = True
    p = await proxy(doc)
    rng = random.Random(7)
    failures: list[str] = []
    done = 0
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal done
        while not stop.is_set() and done < 3000:
            try:
                method = "GET" if done % 3 else "POST"
                async with http.request(method, p.url + "/load", data=b"q" * 64) as response:
                    body = await response.read()
                    if response.status != 200 or not body:
                        failures.append(f"{response.status} {body[:80]!r}")
            except aiohttp.ClientError as err:
                failures.append(repr(err))
            done += 1

    async def rewrite() -> None:
        for i in range(40):
            names = rng.sample(sorted(urls), rng.randint(1, 4))
            entries = [(n, urls[n], rng.randint(0 if len(names) > 1 else 1, 5)) for n in names]
            if all(w == 0 for _, _, w in entries):
                entries[0] = (entries[0][0], entries[0][1], 1)
            p.write(config_doc(entries, generation=f"g{i}"))
            await asyncio.sleep(0.08)
        final = config_doc([("c", urls["c"], 1), ("d", urls["d"], 3)], generation="final")
        p.write(final)

    loop = asyncio.get_running_loop()
    started = loop.time()
    clients = [asyncio.create_task(client()) for _ in range(16)]
    await rewrite()
    server = p.info.server
    await _wait_for(lambda: server.pool.config.generation == "final", 3.0)
    await _wait_for(lambda: all(b.state == "up" for b in server.pool.backends.values()), 5.0)
    await asyncio.wait_for(asyncio.gather(*clients), 15)
    stop.set()
    assert loop.time() - started < 15
    assert failures == []
    assert done >= 1000
    assert server.reloads >= 20
    # the final distribution is exact: c:d = 1:3 over any 4 consecutive picks
    counts = await _counts(http, p.url + "/final", 40)
    assert counts == {"c": 10, "d": 30}
    snapshot = await _pool(http, p)
    assert snapshot["generation"] == "final"
    assert json.dumps(snapshot)  # serialisable


async def test_watcher_does_not_feed_on_its_own_reads(tmp_path: Path) -> None:
    """Reading the file raises inotify open/close events; they must not trigger reloads."""

    class Target:
        reload_errors = 0
        last_reload_error: str | None = None
        last_reload_attempt_at = 0.0
        applied = 0

        def apply_config(self, config: BackendsConfig, *, digest: str = "") -> None:
            self.applied += 1

    path = tmp_path / "backends.json"
    write_config(path, config_doc([]))
    target = Target()
    watcher = ConfigWatcher(path, target, digest="")
    watcher.start()
    try:
        write_config(path, config_doc([], generation="two"))
        for _ in range(100):
            if target.applied:
                break
            await asyncio.sleep(0.02)
        assert target.applied == 1
        checks = watcher.checks
        await asyncio.sleep(1.3)  # longer than the stat poll interval
        assert watcher.checks == checks
        assert target.applied == 1
    finally:
        await watcher.close()


async def test_removed_backend_finishes_in_flight_then_closes(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    a, b = await backends("a"), await backends("b")
    p = await proxy(config_doc([("a", a.url, 1)]))
    server = p.info.server
    old = server.pool.backends["a"]
    slow = asyncio.create_task(http.get(p.url + "/slow?s=0.6"))
    await _wait_for(lambda: old.inflight == 1, 3.0)
    p.write(config_doc([("b", b.url, 1)], generation="without-a"))
    await _wait_for(lambda: server.pool.config.generation == "without-a", 3.0)
    assert old.state == "draining"
    rows = (await _pool(http, p))["backends"]
    assert isinstance(rows, list)
    assert [(r["name"], r["inflight"]) for r in rows] == [("b", 0), ("a", 1)]
    assert rows[1]["state"] == "draining"
    assert await _counts(http, p.url + "/x", 3) == {"b": 3}  # new requests: new pool
    response = await slow
    assert response.status == 200 and await response.text() == "late"  # finished on a
    response.release()
    await _wait_for(lambda: old.conns.opened == 0, 3.0)  # and its connection is closed
