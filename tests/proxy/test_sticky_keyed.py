"""A sticky canary's hash is keyed (issue 20 finding 13): a client (or a canary that sets the
cookie) cannot compute offline a cookie value that lands on the version it wants."""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import aiohttp

from lbrec.proxy.config import BackendEntry
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc

KEY_A = "a1" * 32
KEY_B = "b2" * 32


def _old_canary(value: bytes, percent: int) -> bool:
    """The mapping before the fix: CRC-32 of the cookie, modulo 100, below the percent."""
    return zlib.crc32(value) % 100 < percent


def _adversarial(percent: int, count: int) -> list[str]:
    """Cookie values that the unkeyed mapping put on the canary, as a client finds them."""
    found: list[str] = []
    for i in range(100 * count):
        value = f"pick{i}"
        if _old_canary(value.encode(), percent):
            found.append(value)
            if len(found) == count:
                break
    return found


def _split(doc: dict[str, Any], percent: int, sticky_key: str | None) -> None:
    for entry, (version, share) in zip(
        doc["backends"], (("stable", 100 - percent), ("canary", percent)), strict=True
    ):
        entry.update(version=version, percent=share, sticky="cookie:lb-canary")
        if sticky_key is not None:
            entry["sticky_key"] = sticky_key


async def _on_canary(http: aiohttp.ClientSession, url: str, values: list[str]) -> int:
    hits: Counter[str] = Counter()
    for value in values:
        async with http.get(url + "/", headers={"Cookie": f"lb-canary={value}"}) as response:
            hits[response.headers["X-Backend"]] += 1
    return hits["canary"]


async def test_cookies_chosen_from_the_unkeyed_hash_do_not_pick_the_canary(
    backends: BackendFactory, proxy: ProxyFactory, http: aiohttp.ClientSession
) -> None:
    """200 clients each send a cookie value that the old mapping sent to a 5 % canary: all 200
    landed there. Keyed, about 5 % of them do (the bound is loose: > 40 of 200 at p = 0.05 is
    below 1e-12)."""
    stable, canary = await backends("stable"), await backends("canary")
    values = _adversarial(5, 200)
    assert len(values) == 200
    for sticky_key in (None, KEY_A):  # as an older file has it, and as the reconciler writes
        doc = config_doc([("web", stable.url, 1), ("web", canary.url, 1)])
        _split(doc, 5, sticky_key)
        p = await proxy(doc)
        on_canary = await _on_canary(http, p.url, values)
        assert on_canary <= 40, (sticky_key, on_canary)
        p.stop.set()


def test_one_key_one_mapping_for_every_worker_and_restart() -> None:
    """Workers of one proxy (--workers N) and a restarted proxy read the same backends.json:
    the key is in the file, so they put each client on the same version. Another rollout
    (another key) maps the clients afresh."""
    from lbrec.proxy.pool import sticky_secret, sticky_version

    def entry(key: str) -> BackendEntry:
        return BackendEntry(
            name="web",
            url="http://127.0.0.1:9",
            weight=1,
            version="canary",
            percent=30,
            sticky="cookie:lb-canary",
            sticky_key=key,
        )

    values = [f"user{i}".encode() for i in range(2000)]
    one, two = sticky_secret(entry(KEY_A)), sticky_secret(entry(KEY_A))
    other = sticky_secret(entry(KEY_B))
    first = [sticky_version(v, 30, one) for v in values]
    assert first == [sticky_version(v, 30, two) for v in values]
    assert 480 < first.count("canary") < 720  # about 30 % of the clients
    again = [sticky_version(v, 30, other) for v in values]
    moved = sum(a != b for a, b in zip(first, again, strict=True))
    assert moved > 400  # a new rollout is a new draw
    # As the percent grows within one rollout, clients move to the canary, never back.
    at_50 = [sticky_version(v, 50, one) for v in values]
    assert all(b == "canary" for a, b in zip(first, at_50, strict=True) if a == "canary")


def test_a_bad_or_split_sticky_key_names_the_field() -> None:
    import pytest

    from lbrec.proxy.config import BackendsConfig

    def doc(*keys: str) -> dict[str, Any]:
        out = config_doc([("web", "http://127.0.0.1:9001", 1), ("web", "http://127.0.0.1:9002", 1)])
        _split(out, 10, None)
        for entry, key in zip(out["backends"], keys, strict=True):
            entry["sticky_key"] = key
        return out

    BackendsConfig.model_validate(doc(KEY_A, KEY_A))
    with pytest.raises(ValueError, match="backend 'web' have different sticky_key"):
        BackendsConfig.model_validate(doc(KEY_A, KEY_B))
    with pytest.raises(ValueError, match=r"backends\.0\.sticky_key") as caught:
        BackendsConfig.model_validate(doc("not-hex", "not-hex"))
    assert "64" in str(caught.value)
