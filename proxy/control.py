"""The admin listener's link to ``lbrec up`` (``lbrec proxy --control-socket PATH``).

Under ``lbrec up`` the proxy is a process of its own; the reconciler serves a small HTTP app on
a Unix socket in its deploy folder (``.lbrec/control.sock``, in a 0700 folder). Through it the
admin listener keeps what ``up`` used to add in-process: ``POST /-/sync`` (the GitOps webhook)
is forwarded there, with the caller's address in :data:`PEER_HEADER`, and answered with what
``up`` answers; ``/metrics`` appends ``up``'s series (the reconciler's) to the proxy's own.
The admin token and Host rules of :mod:`proxy.admin` apply before anything is forwarded.

``up`` hung, stopped or gone changes nothing on the data path: a forward answers 503 after
:data:`FORWARD_TIMEOUT`, and ``/metrics`` leaves the reconciler's series out after
:data:`METRICS_TIMEOUT`, never waiting longer than that on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["FORWARD_TIMEOUT", "METRICS_TIMEOUT", "PEER_HEADER", "ControlLink"]

_log = logging.getLogger("lbrec.proxy")

PEER_HEADER = "X-Lbrec-Peer"  # the caller's address, set by the proxy (never the caller's own)
FORWARD_TIMEOUT = 10.0
METRICS_TIMEOUT = 1.0
_HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        PEER_HEADER.lower(),
    }
)


class ControlLink:
    """Forwards ``POST /-/sync`` to ``path`` and holds its /metrics (a prometheus Collector)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session: aiohttp.ClientSession | None = None
        self._families: list[Metric] = []

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.path), force_close=True),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/-/sync", self._forward)]

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()  # the admin app's size limit applies (413)
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        headers[PEER_HEADER] = request.remote or "unknown"
        try:
            async with asyncio.timeout(FORWARD_TIMEOUT):
                async with self._client().post(
                    f"http://lbrec-up{request.path_qs}", data=body, headers=headers
                ) as answer:
                    text = await answer.read()
                    return web.Response(
                        status=answer.status,
                        body=text,
                        content_type=answer.content_type or "text/plain",
                    )
        except (OSError, aiohttp.ClientError, TimeoutError) as err:
            _log.warning(
                "POST /-/sync not forwarded to lbrec up (%s): %s",
                self.path,
                err or type(err).__name__,
                extra={"event": "control_unreachable"},
            )
            return web.Response(
                status=503, text="lbrec up (the reconciler) is not answering; try again\n"
            )

    async def refresh(self) -> None:
        """Fetch ``up``'s /metrics (before the admin listener renders its own)."""
        try:
            async with asyncio.timeout(METRICS_TIMEOUT):
                async with self._client().get("http://lbrec-up/metrics") as answer:
                    text = (await answer.read()).decode()
                    if answer.status != 200:
                        raise aiohttp.ClientError(f"status {answer.status}")
            self._families = list(text_string_to_metric_families(text))
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError):
            self._families = []  # no stale figures: the series are absent while up is

    def collect(self) -> Iterator[Metric]:
        yield from self._families
