"""proxy/features.py: the seam the exchange will call, end to end on compiled plans."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from lbrec.proxy.config import BackendsConfig, parse_config
from lbrec.proxy.features import Admitted, Features, LocalAnswer
from lbrec.proxy.maintenance import HoldGate, MaintenanceState, Pause
from lbrec.proxy.routing import Router

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


def config(tmp_path: Path) -> BackendsConfig:
    (tmp_path / "users").write_text(f"admin:{HASH}\n")
    (tmp_path / "down.html").write_text("<p>{{message}}</p>")
    return parse_config(
        """{
  "backends": [
    {"name": "web", "url": "http://127.0.0.1:9001", "weight": 1},
    {"name": "api", "url": "http://127.0.0.1:9002", "weight": 1}
  ],
  "routes": [
    {"host": "shop.example.com", "backends": ["web"], "sticky": "cookie:lb",
     "rate_limit": {"requests": 2, "per": 60, "concurrency": 1}, "compress": true},
    {"host": "admin.example.com", "backends": ["api"],
     "auth": {"allow": ["10.0.0.0/8"], "basic": {"users_file": "users", "realm": "Admins"}}},
    {"host": "plain.example.com", "backends": ["web"]}
  ],
  "defaults": {"maintenance": {"page": "down.html", "retry_after": 60}}
}"""
    )


def request(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "client_ip": "10.1.2.3",
        "method": b"GET",
        "uri": b"/",
        "host": b"shop.example.com",
        "proto": "http",
        "headers": [],
    }
    return {**base, **over}


def basic(text: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", b"Basic " + base64.b64encode(text.encode()))]


async def test_a_plain_pool_has_no_plan(tmp_path: Path) -> None:
    features = Features(BackendsConfig(), tmp_path)
    assert features.plan(None) is None and features.problems == []


async def test_plans_by_route(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    features = Features(cfg, tmp_path)
    router = Router(cfg.routes or ())
    shop = features.plan(router.match(b"shop.example.com", b"/"))
    admin = features.plan(router.match(b"admin.example.com", b"/"))
    plain = features.plan(router.match(b"plain.example.com", b"/"))
    assert shop is not None and admin is not None and plain is not None  # defaults: maintenance
    assert shop.compress is not None and admin.compress is None
    assert shop.affinity is not None and shop.affinity.value_of("web")  # only its own backends
    with pytest.raises(KeyError):
        shop.affinity.value_of("api")
    gate = HoldGate()

    # the rate limit and the concurrency cap
    first = await shop.admit(gate=gate, **request())  # type: ignore[arg-type]
    assert isinstance(first, Admitted) and first.slot == b"ip:10.1.2.3"
    busy = await shop.admit(gate=gate, **request())  # type: ignore[arg-type]
    assert isinstance(busy, LocalAnswer) and (busy.status, busy.reason) == (429, "concurrency")
    shop.release(first.slot)
    second = await shop.admit(gate=gate, **request())  # type: ignore[arg-type]
    assert isinstance(second, Admitted)
    shop.release(second.slot)
    third = await shop.admit(gate=gate, **request())  # type: ignore[arg-type]
    assert isinstance(third, LocalAnswer) and third.status == 429
    assert (b"Retry-After", b"30") in third.headers
    assert shop.concurrency is not None and shop.concurrency.held(b"ip:10.1.2.3") == 0

    # the allow-list, then basic auth
    outside = await admin.admit(gate=gate, **request(client_ip="203.0.113.1"))  # type: ignore[arg-type]
    assert isinstance(outside, LocalAnswer) and outside.status == 403
    anonymous = await admin.admit(gate=gate, **request())  # type: ignore[arg-type]
    assert isinstance(anonymous, LocalAnswer) and anonymous.status == 401
    assert (b"WWW-Authenticate", b'Basic realm="Admins", charset="UTF-8"') in anonymous.headers
    wrong = await admin.admit(gate=gate, **request(headers=basic("admin:no")))  # type: ignore[arg-type]
    assert isinstance(wrong, LocalAnswer) and wrong.status == 401
    right = await admin.admit(gate=gate, **request(headers=basic("admin:pw")))  # type: ignore[arg-type]
    assert isinstance(right, Admitted)

    # maintenance, with the top-level page and message
    gate.update(MaintenanceState(routes={"plain.example.com/": Pause(since=1, message="db")}))
    paused = await plain.admit(gate=gate, **request())  # type: ignore[arg-type]
    assert isinstance(paused, LocalAnswer) and paused.status == 503
    assert paused.body == b"<p>db</p>" and (b"Retry-After", b"60") in paused.headers
    assert isinstance(await admin.admit(gate=gate, **request(headers=basic("admin:pw"))), Admitted)  # type: ignore[arg-type]


async def test_a_reload_keeps_buckets_and_a_lost_file_fails_closed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    features = Features(cfg, tmp_path)
    shop = features.plans[0]
    assert shop is not None and shop.rate is not None
    again = Features(cfg, tmp_path, previous=features)
    assert again.plans[0] is not None and again.plans[0].rate is shop.rate  # buckets kept
    (tmp_path / "users").unlink()
    (tmp_path / "down.html").unlink()
    changed = cfg.model_copy(update={"defaults": None})
    lost = Features(changed, tmp_path / "elsewhere", previous=again)
    admin = lost.plans[1]
    assert admin is not None and lost.problems and "cannot read" in lost.problems[0]
    denied = await admin.admit(gate=HoldGate(), **request(headers=basic("admin:pw")))  # type: ignore[arg-type]
    assert isinstance(denied, LocalAnswer) and denied.status == 401
    assert lost.plans[2] is None  # no feature left on that route: the hot path
    await lost.retire(again)
    await lost.retire(None)


async def test_the_allow_list_refuses_before_the_maintenance_hold(tmp_path: Path) -> None:
    """A paused route with a hold: a client the allow-list refuses gets its 403 at once, never
    a waiter's place; an allowed one waits (and gets the 503 when the hold runs out)."""
    import asyncio

    cfg = config(tmp_path)
    admin = Features(cfg, tmp_path).plans[1]
    assert admin is not None
    gate = HoldGate(MaintenanceState(all=Pause(since=1, hold=30)))
    outside = await asyncio.wait_for(
        admin.admit(gate=gate, **request(client_ip="203.0.113.1")),  # type: ignore[arg-type]
        timeout=5,
    )
    assert isinstance(outside, LocalAnswer) and outside.status == 403
    assert gate.waiting == 0
    inside = asyncio.ensure_future(admin.admit(gate=gate, **request()))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert gate.waiting == 1 and not inside.done()  # an allowed client is held
    inside.cancel()
