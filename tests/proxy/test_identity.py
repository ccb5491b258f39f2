"""Identity, not just liveness (issue 25): the proxy never routes a frozen entry, and at the
same URL another container is another backend (its health is not carried over)."""

from __future__ import annotations

import asyncio

from lbrec.proxy.config import BackendEntry, BackendsConfig
from lbrec.proxy.health import HealthState
from lbrec.proxy.server import ProxyServer

URL = "http://127.0.0.1:32768"


def _config(*entries: BackendEntry) -> BackendsConfig:
    return BackendsConfig(backends=entries)


def test_a_frozen_entry_is_never_routed_and_another_container_at_a_url_starts_over() -> None:
    async def main() -> None:
        first = BackendEntry(name="a", url=URL, weight=1, container="aaaa11112222")
        server = ProxyServer(_config(first))
        (backend,) = server.pool.backends.values()
        assert backend.health is HealthState.UP and backend.container == "aaaa11112222"

        server.apply_config(_config(first.model_copy(update={"frozen": "the engine went away"})))
        assert server.pool.backends == {} and server.pool.pick() is None

        server.apply_config(_config(first))  # re-read by a pass: routed again, proven again
        (again,) = server.pool.backends.values()
        assert again is not backend and again.health is HealthState.CHECKING

        # the same URL, another container (the engine handed the port to someone else)
        again.health = HealthState.UP
        other = first.model_copy(update={"container": "bbbb33334444"})
        server.apply_config(_config(other))
        (moved,) = server.pool.backends.values()
        assert moved is not again and moved.health is HealthState.CHECKING

    asyncio.run(main())


def test_frozen_entries_may_share_a_url_with_a_live_one() -> None:
    frozen = BackendEntry(name="a", url=URL, weight=1, container="aaaa11112222", frozen="why")
    live = BackendEntry(name="a", url=URL, weight=1, container="bbbb33334444")
    config = _config(frozen, live)
    assert config.routable == (live,)
