"""EDGE. Ask the running proxy (its admin listener) what it serves.

Make before break: lbrec writes a pool, waits until the proxy reports that generation
(:func:`wait_for_generation`), and before a leaving instance is stopped waits until the proxy
has no request in flight to it (:func:`wait_drained`). With ``LBREC_ADMIN_TOKEN`` set (the proxy
then requires it on its reading endpoints) the token is sent, only to an address of this host
(:func:`admin_target`) and never through a redirect.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .http_client import HttpError, get

__all__ = [
    "MAX_POOL_DOCUMENT",
    "TOKEN_ENV",
    "admin_target",
    "inflight",
    "pool_document",
    "proxy_generation",
    "wait_drained",
    "wait_for_generation",
]

TOKEN_ENV = "LBREC_ADMIN_TOKEN"


# A pool document of thousands of instances is a few MiB; anything longer is not our proxy's.
MAX_POOL_DOCUMENT = 16 * 1024 * 1024


def admin_target(admin: str) -> str | None:
    """Where the reconciler reaches the proxy of ``admin`` (HOST:PORT): a loopback address,
    or an address of this host's own interfaces (a wildcard bind is reached on loopback);
    None for a name or another host's address, which is never asked nor sent the token
    (docs/security.md, finding 3: under `lbrec sync` the file is a commit's)."""
    host, _, port = admin.rpartition(":")
    bare = host.strip("[]")
    if bare in ("0.0.0.0", ""):
        return f"127.0.0.1:{port}"
    if bare == "::":
        return f"[::1]:{port}"
    if bare == "localhost":
        return f"127.0.0.1:{port}"
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return None  # a DNS name: it could resolve anywhere
    if address.is_loopback or _is_local(address):
        return admin
    return None


def _is_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """``address`` is one of this host's (only those can be bound)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((str(address), 0))
        except OSError:
            return False
    return True


def pool_document(
    admin: str, *, timeout: float = 0.5, env: Mapping[str, str] = os.environ
) -> dict[str, Any] | None:
    """GET /-/pool of the proxy at ``admin`` (HOST:PORT); None if none answers, or if
    ``admin`` is not an address of this host. No redirect is followed (the token stays with
    the proxy) and the whole exchange has one deadline."""
    target = admin_target(admin)
    if target is None:
        return None
    headers = {"Authorization": f"Bearer {token}"} if (token := env.get(TOKEN_ENV)) else None
    try:
        answer = get(
            f"http://{target}/-/pool", timeout=timeout, max_body=MAX_POOL_DOCUMENT, headers=headers
        )
        data = answer.json() if answer.status == 200 else None
    except HttpError:
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
