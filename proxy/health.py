"""Active health checks: the async probes (aiohttp) that feed the pure rise/fall state.

The state machine and what a probe reports are in proxy/health_state.py (no I/O, imported by
the compiled pool); the probes report through :class:`~proxy.health_state.StatusSink` and
know nothing about the balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

import aiohttp

from .config import HealthSettings
from .health_state import (
    HealthState,
    ProbeResult,
    ProbeTarget,
    RiseFall,
    StatusSink,
    classify_status,
    next_probe_delay,
)

__all__ = [
    "HEALTH_BODY_CAP",
    "HealthMonitor",
    "HealthState",
    "ProbeResult",
    "ProbeTarget",
    "RiseFall",
    "StatusSink",
    "classify_error",
    "classify_status",
]

_log = logging.getLogger("lbrec.proxy.health")

# The most of a check's body the probe reads (the status alone decides). A short body is read
# to its end, which keeps the exchange well-formed; a longer one is left unread and the
# connection closed, so a backend streaming an endless body costs the proxy this much, not
# whatever arrives in ``health.timeout`` (issue 20 finding 5).
HEALTH_BODY_CAP = 4096


def classify_error(err: BaseException) -> tuple[str, str]:
    """PURE. ``(code, reason)`` of a check that got no usable answer.

    Layer 4 (``L4CON``, ``L4TOUT``) when the TCP connection could not be made, layer 6
    (``L6RSP``) when TLS failed, layer 7 (``L7TOUT``, ``L7RSP``) when the connection was made
    but no valid answer came in time. Order matters: aiohttp's connect timeout is also a
    ``TimeoutError``, and its TLS errors are also connector errors.
    """
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return "L4TOUT", ""
    if isinstance(err, TimeoutError):
        return "L7TOUT", ""
    if isinstance(err, aiohttp.ClientSSLError):
        return "L6RSP", "tls handshake failed"
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return "L4CON", "name does not resolve"
    if isinstance(err, aiohttp.ClientConnectorError):
        return "L4CON", _os_reason(err.os_error, "connect failed")
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "L7RSP", "server disconnected"
    if isinstance(err, aiohttp.ClientPayloadError):
        return "L7RSP", "broken body"
    if isinstance(err, aiohttp.ClientResponseError):
        return "L7RSP", "malformed response"
    if isinstance(err, OSError):  # e.g. reset after connecting
        return "L7RSP", _os_reason(err, "connection error")
    return "L7RSP", type(err).__name__


def _os_reason(err: OSError, fallback: str) -> str:
    """``connection refused`` for ECONNREFUSED: the system's text for the errno, lower case."""
    if err.errno is None:
        return fallback
    return os.strerror(err.errno).lower()


class HealthMonitor:
    """Owns one probe task per backend. ``update`` follows reloads; ``close`` cancels all."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        sink: StatusSink,
        settings: HealthSettings,
        on_result: Callable[[str, RiseFall, ProbeResult], None] | None = None,
    ) -> None:
        self._session = session
        self._sink = sink
        self._settings = settings
        self._on_result = on_result
        self._tasks: dict[str, tuple[ProbeTarget, asyncio.Task[None]]] = {}
        self._states: dict[str, RiseFall] = {}

    def state_of(self, name: str) -> RiseFall | None:
        return self._states.get(name)

    def update(
        self,
        targets: list[ProbeTarget],
        settings: HealthSettings,
        *,
        initial: dict[str, HealthState],
    ) -> None:
        """Probe exactly ``targets``; new names start in ``initial[name]`` (default CHECKING)."""
        self._settings = settings
        wanted = {t.name: t for t in targets}
        for name, (target, task) in list(self._tasks.items()):
            if wanted.get(name) != target:
                task.cancel()
                del self._tasks[name]
                self._states.pop(name, None)
        for name, target in wanted.items():
            if name in self._tasks:
                rf = self._states[name]
                self._states[name] = rf.with_thresholds(rise=settings.rise, fall=settings.fall)
                continue
            start = initial.get(name, HealthState.CHECKING)
            self._states[name] = RiseFall(settings.rise, settings.fall, state=start)
            self._tasks[name] = (
                target,
                asyncio.get_running_loop().create_task(self._run(target), name=f"probe-{name}"),
            )

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, target: ProbeTarget) -> None:
        while True:
            settings = self._settings
            result = await self._probe(target, settings)
            before = self._states.get(target.name)
            if before is None:  # removed while probing
                return
            after = before.observe(result.ok)
            self._states[target.name] = after
            if self._on_result is not None:
                self._on_result(target.name, after, result)
            if after.state is not before.state:
                _log.info(
                    "backend %s health %s -> %s (%s)",
                    target.name,
                    before.state.value,
                    after.state.value,
                    result.summary,
                    extra={
                        "event": "health",
                        "backend": target.name,
                        "state": after.state.value,
                        "check": result.code,
                        "reason": result.reason,
                        "detail": result.detail,
                    },
                )
                self._sink.set_health(target.name, after.state)
            await asyncio.sleep(next_probe_delay(after, settings))

    async def _probe(self, target: ProbeTarget, settings: HealthSettings) -> ProbeResult:
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        started = time.monotonic()
        try:
            async with self._session.get(
                target.base_url + (target.path or settings.path),
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                ok, code, reason = classify_status(response.status)
                detail = str(response.status)
                if not await _drain_capped(response, HEALTH_BODY_CAP):
                    response.close()  # hang up on the rest: never reused, never read
        except TimeoutError as err:  # aiohttp's connect timeout is one too (L4TOUT)
            ok, detail = False, f"timeout after {settings.timeout}s"
            code, reason = classify_error(err)
        except aiohttp.ClientError as err:
            ok, detail = False, f"{type(err).__name__}: {err}"
            code, reason = classify_error(err)
        duration = time.monotonic() - started
        return ProbeResult(ok, time.time(), detail, code, reason, duration)


async def _drain_capped(response: aiohttp.ClientResponse, cap: int) -> bool:
    """Read and discard at most ``cap`` bytes of the body; True when it ended within them."""
    content = response.content
    left = cap
    while left > 0 and not content.at_eof():
        data = await content.read(left)
        if not data:
            break
        left -= len(data)
    return content.at_eof()
