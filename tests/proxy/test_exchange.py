"""An Exchange driven through its contracts (proxy/contracts.py) alone: no socket, no loop.

The fakes below are typed as the Protocols, so mypy proves they are the whole contract; each
test then shows one decision the exchange makes on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from lbrec.proxy.balancer import SmoothWeightedRoundRobin
from lbrec.proxy.config import BackendsConfig
from lbrec.proxy.contracts import Downstream, ExchangeServer
from lbrec.proxy.exchange import Exchange
from lbrec.proxy.fastlane import PlainAnswer
from lbrec.proxy.framing import RequestHead, check_request
from lbrec.proxy.health_state import HealthState
from lbrec.proxy.maintenance import HoldGate
from lbrec.proxy.pool import Backend, Pool
from lbrec.proxy.route_stats import RouteFigures
from lbrec.proxy.stats import STATUS_CLASSES, Answers
from lbrec.proxy.tunnel import Tunnel


class _Loop:
    """Only what an exchange asks of the loop before any socket: the time and tasks."""

    def __init__(self) -> None:
        self.tasks: list[Coroutine[Any, Any, None]] = []

    def time(self) -> float:
        return 0.0

    def create_task(self, coro: Coroutine[Any, Any, None]) -> Any:
        self.tasks.append(coro)
        coro.close()  # never run: the test only sees that a connect was started
        return None


@dataclass
class _Server:
    pool: Pool
    loop: Any = field(default_factory=_Loop)
    access_log: bool = False
    max_header_bytes: int = 65536
    max_body_bytes: int = 1 << 20
    failures: list[str] = field(default_factory=list)
    answers: Answers = field(default_factory=Answers)
    empty_reason: str = "no backends configured"
    front: None = None  # no routes, no TLS
    features: None = None  # no route features (proxy/features.py)
    by_route: bool = False
    gate: HoldGate = field(default_factory=HoldGate)
    route_figures: RouteFigures = field(default_factory=RouteFigures)

    def is_trusted(self, ip: str) -> bool:
        return False

    def pool_for(self, head: RequestHead, route: str | None = None) -> Pool:
        return self.pool

    def next_request_id(self) -> bytes:
        return b"test-1"

    def passive_failure(self, backend: Backend, reason: str) -> None:
        self.failures.append(f"{backend.name}: {reason}")


@dataclass
class _Client:
    """A downstream that records what it is asked to send (no protocol of its own)."""

    server: ExchangeServer
    task: asyncio.Task[None] | None = None
    client_ip: str = "127.0.0.1"
    trusted: bool = False
    forwarding: bytes = b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
    secure: bool = False
    sni: str | None = None
    proto: bytes = b"http"
    closed: bool = False
    write_paused: bool = False
    bytes_out: int = 0
    sent: list[object] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)

    def relay_plain(self, exchange: Exchange, data: bytes) -> PlainAnswer | None:
        return None  # no fast lane here: every answer the general way

    def send_head(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        bodyless: bool,
        upgrade: bytes | None,
    ) -> bool:
        self.sent.append((status, reason, headers))
        return False

    def send_continue(self) -> None:
        self.sent.append(100)

    def send_body(self, data: bytes) -> None:
        self.sent.append(data)

    def send_end(self) -> None:
        self.sent.append("end")

    def send_error(self, exchange: Exchange, status: int, text: str) -> None:
        self.errors.append((status, text))

    def hold(self) -> None:
        pass

    def flush(self, *, discard: bool = False) -> None:
        pass

    def abort(self) -> None:
        self.closed = True

    def pause_reading_for_body(self, pause: bool) -> None:
        pass

    def pause_reading_for_upstream(self, pause: bool) -> None:
        pass

    def start_tunnel(self, tunnel: Tunnel) -> asyncio.Transport:
        raise AssertionError("no tunnel here")

    def exchange_done(self, exchange: Exchange, *, clean: bool) -> None:
        self.done.append(clean)


def _pool(entries: list[dict[str, Any]], *, up: bool = True) -> Pool:
    config = BackendsConfig.model_validate({"backends": entries})
    backends = {
        e.name: Backend(e, health=HealthState.UP if up else HealthState.DOWN, key=e.name)
        for e in config.backends
    }
    weights = {e.name: e.weight for e in config.backends}
    healthy = [name for name, b in backends.items() if up and b.weight > 0]
    return Pool(config, backends, SmoothWeightedRoundRobin(weights, healthy=healthy), "g1")


def _head() -> RequestHead:
    head = check_request(b"GET", b"/", "1.1", [(b"Host", b"example.test")])
    assert isinstance(head, RequestHead)
    return head


def _exchange(pool: Pool) -> tuple[Exchange, _Client, _Server]:
    server = _Server(pool)
    client = _Client(server)
    as_downstream: Downstream = client  # the fakes are the contracts, checked by mypy
    exchange = Exchange(as_downstream, _head(), keep_alive=True)
    return exchange, client, server


def test_no_backend_configured_is_a_503_and_the_exchange_ends() -> None:
    exchange, client, _ = _exchange(_pool([]))
    exchange.start()
    assert client.errors == [(503, "no backends configured")]
    assert client.done == [True]  # the client connection may serve its next request
    assert exchange.server.answers.no_backend == {"no_backends_configured": 1}
    assert exchange.server.answers.status[STATUS_CLASSES.index("5xx")] == 1


def test_no_healthy_backend_is_a_503_that_says_so() -> None:
    pool = _pool([{"name": "a", "url": "http://127.0.0.1:9", "weight": 1}], up=False)
    pool.fallback = SmoothWeightedRoundRobin({"a": 1}, healthy=[])  # nothing to panic-route to
    exchange, client, _ = _exchange(pool)
    exchange.start()
    assert client.errors == [(503, "no healthy backend available")]
    assert exchange.server.answers.no_backend == {"no_healthy_backend": 1}


def test_a_healthy_backend_without_a_pooled_connection_starts_one_connect() -> None:
    exchange, client, server = _exchange(
        _pool([{"name": "a", "url": "http://127.0.0.1:9", "weight": 1}])
    )
    exchange.start()
    assert client.errors == [] and client.done == []  # in progress, nothing answered yet
    assert len(server.loop.tasks) == 1  # one connect task, held by the client connection
    as_server: ExchangeServer = server
    assert as_server.pool_for(exchange.request) is exchange.pool
