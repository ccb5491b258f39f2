"""EDGE. Ask the running proxy (its admin listener) what it serves.

Make before break: lbrec writes a pool, waits until the proxy reports that generation
(:func:`wait_for_generation`), and before a leaving instance is stopped waits until the proxy
has no request in flight to it (:func:`wait_drained`). With ``LBREC_ADMIN_TOKEN`` set (the proxy
then requires it on its reading endpoints) the token is sent.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = [
    "TOKEN_ENV",
    "inflight",
    "pool_document",
    "proxy_generation",
    "wait_drained",
    "wait_for_generation",
]

TOKEN_ENV = "LBREC_ADMIN_TOKEN"


def pool_document(
    admin: str, *, timeout: float = 0.5, env: Mapping[str, str] = os.environ
) -> dict[str, Any] | None:
    """GET /-/pool of the proxy at ``admin`` (HOST:PORT); None if none answers."""
    request = urllib.request.Request(f"http://{admin}/-/pool")
    if token := env.get(TOKEN_ENV):
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def proxy_generation(admin: str, *, timeout: float = 0.5) -> str | None:
    """The generation the proxy at ``admin`` (HOST:PORT) serves, or None if none answers."""
    data = pool_document(admin, timeout=timeout)
    generation = data.get("generation") if data is not None else None
    return str(generation) if generation is not None else None


def wait_for_generation(admin: str, generation: str, *, timeout: float = 5.0) -> bool | None:
    """True once the proxy serves ``generation``; None if no proxy answers; False on timeout."""
    deadline = time.monotonic() + timeout
    seen = proxy_generation(admin)
    if seen is None:
        return None
    while seen != generation:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
        seen = proxy_generation(admin) or seen
    return True


def inflight(document: Mapping[str, Any], urls: Collection[str]) -> int:
    """PURE. Requests and open streams (WebSocket tunnels hold a connection, not a request)
    in flight to any of ``urls``, routed or draining: the busy upstream connections."""
    total = 0
    for backend in document.get("backends") or ():
        if isinstance(backend, dict) and backend.get("url") in urls:
            requests = int(backend.get("inflight") or 0)
            busy = int(backend.get("connections") or 0) - int(backend.get("idle_connections") or 0)
            total += max(requests, busy)
    return total


def wait_drained(
    admin: str,
    urls: Collection[str],
    *,
    timeout: float,
    cancel: Callable[[], object] | None = None,
) -> int | None:
    """Wait until the proxy has nothing in flight to ``urls``, at most ``timeout`` s, or until
    ``cancel()`` is true.

    Returns what was still in flight when it gave up (0: drained), or None if no proxy
    answers (then nothing can be in flight through it)."""
    deadline = time.monotonic() + timeout
    while True:
        document = pool_document(admin)
        if document is None:
            return None
        left = inflight(document, urls)
        if left == 0 or time.monotonic() >= deadline or (cancel is not None and cancel()):
            return left
        time.sleep(0.1)
