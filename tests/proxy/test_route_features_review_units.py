"""Issue 23 under review, below the request path: what a real verifier does off the loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from lbrec.proxy.access import BasicVerifier, load_htpasswd

from .features_support import htpasswd


def test_the_decoy_hash_of_an_unknown_user_is_made_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first unknown user makes the decoy hash (a bcrypt of the file's cost: up to ~0.3 s
    of CPU at cost 12): on the loop, every connection of the worker stalls meanwhile."""
    users = load_htpasswd(htpasswd(tmp_path / "users", "alice", "s3cret"))
    threads: list[str] = []
    real = bcrypt.hashpw

    def hashpw(password: bytes, salt: bytes) -> Any:
        threads.append(threading.current_thread().name)
        return real(password, salt)

    monkeypatch.setattr(bcrypt, "hashpw", hashpw)

    async def run() -> None:
        verifier = BasicVerifier(users, executor=ThreadPoolExecutor(1))
        assert not await verifier.verify("mallory", "s3cret")
        assert not await verifier.verify("eve", "guess")
        assert await verifier.verify("alice", "s3cret")

    asyncio.run(run())
    assert threads, "no decoy was made"
    assert "MainThread" not in threads
