"""EDGE. Ask the running proxy (its admin listener) which pool generation it serves.

Used for make-before-break on removal: lbrec writes the pool without a backend, waits until the
proxy reports that generation, and only then removes the container.
"""

from __future__ import annotations

import json
import time
import urllib.request

__all__ = ["proxy_generation", "wait_for_generation"]


def proxy_generation(admin: str, *, timeout: float = 0.5) -> str | None:
    """The generation the proxy at ``admin`` (HOST:PORT) serves, or None if none answers."""
    try:
        with urllib.request.urlopen(f"http://{admin}/-/pool", timeout=timeout) as response:
            data = json.loads(response.read())
    except (OSError, ValueError):
        return None
    generation = data.get("generation") if isinstance(data, dict) else None
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
