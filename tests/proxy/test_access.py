"""proxy/access.py: the allow-list, htpasswd files made by Debian's `htpasswd` (apache2-utils),
verification off the loop with its cache, the Basic header and the log's redaction."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from lbrec.proxy.access import (
    AllowList,
    BasicVerifier,
    Busy,
    HtpasswdError,
    challenge,
    load_htpasswd,
    parse_basic,
    parse_htpasswd,
    redact_headers,
)

HTPASSWD = shutil.which("htpasswd")


def make(path: Path, flag: str, user: str, password: str, *, create: bool = True) -> None:
    """Debian's htpasswd (apache2-utils; scripts/setup.sh installs it)."""
    if HTPASSWD is None:
        pytest.fail("htpasswd is missing: `bash scripts/setup.sh` installs apache2-utils")
    args = [HTPASSWD, "-b", *(["-c"] if create else []), *flag.split(), str(path), user, password]
    subprocess.run(args, check=True, capture_output=True, timeout=30)


# -- allow-list -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("203.0.113.7", True),
        ("203.0.114.1", False),
        ("2001:db8::1", True),
        ("[2001:db8:ffff::2]", True),
        ("2001:db9::1", False),
        ("::ffff:203.0.113.9", True),  # IPv4-mapped: the IPv4 address counts
        ("fe80::1%eth0", False),
        ("10.1.2.3", True),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_allow_list(client: str, allowed: bool) -> None:
    allow = AllowList(["203.0.113.0/24", "2001:db8::/32", "10.0.0.0/8"])
    assert allow.allows(client) is allowed


def test_an_empty_allow_list_lets_nobody_in() -> None:
    assert not AllowList([]).allows("127.0.0.1")


# -- htpasswd ---------------------------------------------------------------------------------


def test_a_bcrypt_file_made_by_htpasswd(tmp_path: Path) -> None:
    users = tmp_path / "admin.htpasswd"
    make(users, "-B -C 4", "alice", "s3cret")
    make(users, "-B -C 4", "bob", "pässwörd", create=False)
    loaded = load_htpasswd(users)
    assert set(loaded.users) == {"alice", "bob"}
    assert loaded.users["alice"].startswith("$2y$04$")

    async def run() -> None:
        verifier = BasicVerifier(loaded, executor=ThreadPoolExecutor(2))
        assert await verifier.verify("alice", "s3cret")
        assert await verifier.verify("bob", "pässwörd")
        assert not await verifier.verify("alice", "S3cret")
        assert not await verifier.verify("carol", "s3cret")

    asyncio.run(run())


def test_argon2_lines(tmp_path: Path) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    text = f"# admins\n\ndave:{hasher.hash('hunter2')}\n"
    loaded = parse_htpasswd(text, source="f")

    async def run() -> None:
        verifier = BasicVerifier(loaded, executor=ThreadPoolExecutor(1))
        assert await verifier.verify("dave", "hunter2")
        assert not await verifier.verify("dave", "hunter3")
        assert not await verifier.verify("eve", "hunter2")  # the decoy: another's hash

    asyncio.run(run())


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("-m", "MD5-crypt ($apr1$"),
        ("-s", "SHA1 ({SHA}"),
        ("-p", "a plain-text or DES-crypt"),
        ("-d", "a plain-text or DES-crypt"),
        ("-2", "SHA-256-crypt"),
        ("-5", "SHA-512-crypt"),
    ],
)
def test_weak_hashes_are_refused_with_file_and_line(tmp_path: Path, flag: str, named: str) -> None:
    users = tmp_path / "users"
    make(users, "-B -C 4", "alice", "x")
    make(users, flag, "mallory", "x", create=False)
    with pytest.raises(HtpasswdError) as caught:
        load_htpasswd(users)
    message = str(caught.value)
    assert f"{users} line 2: user 'mallory': {named}" in message
    assert "htpasswd -B" in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "no user"),
        ("# only a comment\n", "no user"),
        ("alice\n", "line 1: expected USER:HASH"),
        (":$2y$04$abc\n", "line 1: expected USER:HASH"),
        ("a:$2y$04$x\na:$2y$04$y\n", "line 2: user 'a' is already on an earlier line"),
    ],
)
def test_malformed_files(text: str, named: str) -> None:
    with pytest.raises(HtpasswdError, match=named.replace("$", r"\$")):
        parse_htpasswd(text, source="users")


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(HtpasswdError, match="cannot read"):
        load_htpasswd(tmp_path / "missing")
    big = tmp_path / "big"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(HtpasswdError, match="over 1024 KiB"):
        load_htpasswd(big)
    latin = tmp_path / "latin"
    latin.write_bytes(b"\xe9:$2y$04$x\n")
    with pytest.raises(HtpasswdError, match="not UTF-8"):
        load_htpasswd(latin)


# -- the verifier: off the loop, bounded, cached ----------------------------------------------


class SlowCheck:
    """A stand-in for bcrypt: takes ``delay`` seconds in a thread, counts its calls."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self, stored: str, password: str) -> bool:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return stored == "$2y$04$" + password


USERS = parse_htpasswd("alice:$2y$04$right\n", source="u")


def test_checks_run_off_the_loop_and_the_loop_keeps_turning() -> None:
    check = SlowCheck(0.2)

    async def run() -> int:
        verifier = BasicVerifier(USERS, executor=ThreadPoolExecutor(1), check=check)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        assert await verifier.verify("alice", "right")
        task.cancel()
        return ticks

    assert asyncio.run(run()) >= 10  # the loop ran while the hash did
    assert check.threads and "MainThread" not in check.threads


def test_a_verified_pair_is_cached_for_its_ttl_and_failures_never() -> None:
    check = SlowCheck(0.0)
    now = [1000.0]

    async def run() -> None:
        verifier = BasicVerifier(
            USERS, executor=ThreadPoolExecutor(1), check=check, cache_ttl=60, clock=lambda: now[0]
        )
        for _ in range(5):
            assert await verifier.verify("alice", "right")
        assert check.calls == 1
        for _ in range(3):
            assert not await verifier.verify("alice", "wrong")
        assert check.calls == 4  # every failure costs a hash
        now[0] += 61
        assert await verifier.verify("alice", "right")
        assert check.calls == 5  # expired

    asyncio.run(run())


def test_the_cache_is_bounded_and_keyed_by_the_stored_hash() -> None:
    users = parse_htpasswd("".join(f"u{i}:$2y$04$p{i}\n" for i in range(50)), source="many")
    check = SlowCheck(0.0)

    async def run() -> None:
        verifier = BasicVerifier(users, executor=ThreadPoolExecutor(1), check=check, cache_size=8)
        for i in range(50):
            assert await verifier.verify(f"u{i}", f"p{i}")
        assert len(verifier._cache) == 8
        # a new file (a reload): the same pair under a changed line is checked again
        changed = BasicVerifier(
            parse_htpasswd("u1:$2y$04$other\n", source="new"),
            executor=ThreadPoolExecutor(1),
            check=check,
        )
        assert not await changed.verify("u1", "p1")

    asyncio.run(run())


def test_past_max_pending_the_verifier_is_busy() -> None:
    check = SlowCheck(0.2)

    async def run() -> list[object]:
        verifier = BasicVerifier(USERS, executor=ThreadPoolExecutor(1), check=check, max_pending=3)
        calls = [verifier.verify("alice", f"w{i}") for i in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    assert results.count(False) == 3
    assert sum(isinstance(r, Busy) for r in results) == 2


# -- the header, the challenge, the log -------------------------------------------------------


def basic(text: str) -> bytes:
    return b"Basic " + base64.b64encode(text.encode("utf-8"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (basic("alice:s3cret"), ("alice", "s3cret")),
        (basic("alice:with:colons"), ("alice", "with:colons")),
        (basic("jöhn:pässwörd"), ("jöhn", "pässwörd")),
        (basic("alice:"), ("alice", "")),
        (b"basic " + base64.b64encode(b"a:b"), ("a", "b")),
        (b"Bearer abc", None),
        (b"Basic !!!", None),
        (b"Basic " + base64.b64encode(b"nocolon"), None),
        (b"Basic " + base64.b64encode(b"a\x01:b"), None),
        (b"Basic " + base64.b64encode(b"\xff:b"), None),
        (b"", None),
    ],
)
def test_parse_basic(value: bytes, expected: tuple[str, str] | None) -> None:
    assert parse_basic(value) == expected


@given(st.binary(max_size=200))
def test_parse_basic_never_fails(value: bytes) -> None:
    parse_basic(value)


def test_the_challenge_and_the_redaction() -> None:
    assert challenge("Admin area") == (
        b"WWW-Authenticate",
        b'Basic realm="Admin area", charset="UTF-8"',
    )
    head = [
        (b"Host", b"a"),
        (b"Authorization", basic("alice:s3cret")),
        (b"proxy-authorization", b"Basic eA=="),
        (b"Cookie", b"s=1"),
    ]
    out = redact_headers(head)
    assert b"s3cret" not in repr(out).encode() and basic("alice:s3cret") not in dict(out).values()
    assert out[0] == (b"Host", b"a") and out[3] == (b"Cookie", b"s=1")
    assert redact_headers(head, also=frozenset({b"cookie"}))[3] == (b"Cookie", b"[redacted]")
