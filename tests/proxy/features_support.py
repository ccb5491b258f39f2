"""What the route-feature tests (tests/proxy/test_route_features_*.py) share: curl as the
client, real htpasswd files from Debian's apache2-utils, and a proxy doc with routes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import config_doc

__all__ = ["Answer", "curl", "htpasswd", "routed_doc"]


@dataclass
class Answer:
    status: int
    version: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


def _parse(raw: bytes) -> tuple[dict[str, list[str]], bytes]:
    """The last head of ``raw`` (curl -i: interim heads first) and the body."""
    rest = raw
    while True:
        head, _, body = rest.partition(b"\r\n\r\n")
        first = head.split(b"\r\n", 1)[0]
        if b" 100 " in first and body.startswith(b"HTTP/"):
            rest = body
            continue
        break
    headers: dict[str, list[str]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return headers, body


def _curl(url: str, args: tuple[str, ...], resolve: str | None) -> Answer:
    command = ["curl", "-sS", "-i", "--max-time", "15", "-w", "\n%{http_code} %{http_version}"]
    if resolve is not None:
        command += ["--resolve", resolve]
    out = subprocess.run([*command, *args, url], capture_output=True, timeout=30, check=False)
    raw, _, tail = out.stdout.rpartition(b"\n")
    code, version = tail.decode().split()
    headers, body = _parse(raw)  # status 0: no answer (curl's error in the body)
    return Answer(int(code), version, headers, body if int(code) else out.stderr)


async def curl(
    port: int, path: str = "/", *args: str, host: str | None = None, https: bool = False
) -> Answer:
    """curl to the proxy on 127.0.0.1:``port``, for ``host`` (``--resolve``: the name on the
    wire and in SNI, as a browser sends it)."""
    scheme = "https" if https else "http"
    name = host or "127.0.0.1"
    resolve = f"{host}:{port}:127.0.0.1" if host else None
    return await asyncio.to_thread(_curl, f"{scheme}://{name}:{port}{path}", args, resolve)


def htpasswd(path: Path, user: str, password: str) -> Path:
    """A real bcrypt line by Debian's htpasswd (apache2-utils; scripts/setup.sh --tests)."""
    if shutil.which("htpasswd") is None:
        pytest.fail("htpasswd is missing: bash scripts/setup.sh --tests installs apache2-utils")
    create = [] if path.exists() else ["-c"]
    subprocess.run(
        ["htpasswd", "-B", "-C", "4", "-b", *create, str(path), user, password],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def routed_doc(
    entries: list[tuple[str, str, int]], routes: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    doc = config_doc(entries, **extra)
    doc["routes"] = routes
    return doc
