"""Access control of a route (issue 23), evaluated before any byte reaches a backend, in this
order: the allow-list (403), HTTP Basic against an htpasswd file (401), then forward-auth
(proxy/forward_auth.py).

- :class:`AllowList`: CIDRs, IPv4 and IPv6 (an IPv4-mapped IPv6 address counts as IPv4). The
  address it is given is the one the proxy trusts (the peer, or the first untrusted hop of
  X-Forwarded-For when the peer is in ``trusted_proxies``): never a header as sent.
- :func:`load_htpasswd`: bcrypt (``$2y$``/``$2b$``/``$2a$``, what ``htpasswd -B`` writes) and
  argon2 (``$argon2id$``...) lines only. MD5-crypt (``$apr1$``, ``$1$``), SHA1 (``{SHA}``),
  SHA-crypt, DES crypt and plain text are refused with the file and the line named: they fall to
  a GPU in minutes to days, and the point of a hash file is to survive being read.
- :class:`BasicVerifier`: checks a user and password off the event loop (bcrypt and argon2 are
  slow on purpose: ~50-250 ms of CPU each) in a bounded thread pool, with a cache of verified
  credentials (a keyed hash of user, password and the stored hash: the password is never kept,
  a changed line invalidates it) bounded in size and time. Failures are not cached. An unknown
  user costs a hash too (no user enumeration by timing).
- :func:`parse_basic` (RFC 7617, UTF-8), :func:`challenge` (the 401's header), and
  :func:`redact_headers` for the access log: ``Authorization`` is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AllowList",
    "BasicVerifier",
    "Busy",
    "Htpasswd",
    "HtpasswdError",
    "challenge",
    "load_htpasswd",
    "parse_basic",
    "parse_htpasswd",
    "redact_headers",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_SEEN_MAX = 4096


class AllowList:
    """Whether a client address is in one of ``cidrs``. Built once per reload."""

    __slots__ = ("_seen", "_v4", "_v6")

    def __init__(self, cidrs: Iterable[str]) -> None:
        networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self._v4 = [n for n in networks if n.version == 4]
        self._v6 = [n for n in networks if n.version == 6]
        # verdicts of addresses seen lately (parsing one costs microseconds); emptied when full
        self._seen: dict[str, bool] = {}

    def allows(self, client: str) -> bool:
        """``client`` is an address as the proxy trusts it (``[...]`` and a zone tolerated);
        anything that is not an address is refused (fail closed)."""
        seen = self._seen
        verdict = seen.get(client)
        if verdict is None:
            if len(seen) >= _SEEN_MAX:
                seen.clear()
            verdict = seen[client] = self._judge(client)
        return verdict

    def _judge(self, client: str) -> bool:
        try:
            address: Address = ipaddress.ip_address(client.strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        networks: Sequence[Network] = self._v4 if address.version == 4 else self._v6
        return any(address in network for network in networks)


# -- htpasswd ---------------------------------------------------------------------------------


class HtpasswdError(ValueError):
    """An htpasswd file that cannot be used: the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Htpasswd:
    """user -> stored hash, and where it was read."""

    source: str
    users: dict[str, str]


_MAX_FILE = 1024 * 1024
_REFUSED = (
    ("$apr1$", "MD5-crypt ($apr1$, `htpasswd -m`)"),
    ("$1$", "MD5-crypt ($1$)"),
    ("{SHA}", "SHA1 ({SHA}, `htpasswd -s`)"),
    ("$5$", "SHA-256-crypt ($5$)"),
    ("$6$", "SHA-512-crypt ($6$)"),
    ("$md5", "Sun MD5-crypt"),
)
_BCRYPT = ("$2y$", "$2b$", "$2a$")
_ARGON2 = ("$argon2id$", "$argon2i$", "$argon2d$")
FIX = "re-create it with `htpasswd -B FILE USER` (bcrypt) or an argon2 hash"


def _kind(stored: str) -> str | None:
    if stored.startswith(_BCRYPT):
        return "bcrypt"
    if stored.startswith(_ARGON2):
        return "argon2"
    return None


def parse_htpasswd(text: str, *, source: str) -> Htpasswd:
    """PURE. The users of an htpasswd file's text; HtpasswdError names ``source`` and the line
    of the first refused or malformed entry."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        where = f"{source} line {number}"
        if not sep or not user or not stored:
            raise HtpasswdError(f"{where}: expected USER:HASH")
        if _kind(stored) is None:
            what = next((name for prefix, name in _REFUSED if stored.startswith(prefix)), None)
            what = what or "a plain-text or DES-crypt password"
            raise HtpasswdError(
                f"{where}: user {user!r}: {what} is refused (only bcrypt and argon2); {FIX}"
            )
        if user in users:
            raise HtpasswdError(f"{where}: user {user!r} is already on an earlier line")
        users[user] = stored
    if not users:
        raise HtpasswdError(f"{source}: no user (USER:HASH lines); {FIX}")
    return Htpasswd(source, users)


def load_htpasswd(path: Path) -> Htpasswd:
    """Read and check an htpasswd file; HtpasswdError names the file (and the line)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except OSError as err:
        raise HtpasswdError(f"{path}: cannot read: {err.strerror or err}") from err
    if len(data) > _MAX_FILE:
        raise HtpasswdError(f"{path}: over {_MAX_FILE // 1024} KiB: not an htpasswd file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HtpasswdError(f"{path}: not UTF-8 text (byte {err.start})") from err
    return parse_htpasswd(text, source=str(path))


def _check(stored: str, password: str) -> bool:
    """One slow, constant-time comparison (bcrypt's and argon2's own)."""
    secret = password.encode("utf-8")
    if stored.startswith(_BCRYPT):
        import bcrypt

        try:
            return bcrypt.checkpw(secret, stored.encode("ascii"))
        except ValueError:
            return False
    if stored.startswith(_ARGON2):
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error, InvalidHashError

        try:
            return PasswordHasher().verify(stored, secret)
        except (Argon2Error, InvalidHashError):
            return False
    return False


# -- verification: off the loop, bounded, cached ----------------------------------------------


class Busy(Exception):
    """More checks are waiting than the pool takes: answer 503 rather than queue without end."""


class BasicVerifier:
    """Checks credentials against an :class:`Htpasswd`. One per route and reload; the thread
    pool is shared by all of them (:meth:`shared_pool`)."""

    _POOL: ThreadPoolExecutor | None = None

    def __init__(
        self,
        htpasswd: Htpasswd,
        *,
        executor: ThreadPoolExecutor | None = None,
        max_pending: int = 64,
        cache_ttl: float = 300.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        check: Callable[[str, str], bool] = _check,
    ) -> None:
        self.users = htpasswd.users
        self._executor = executor
        self._max_pending = max_pending
        self._pending = 0
        self._ttl = cache_ttl
        self._size = cache_size
        self._clock = clock
        self._check = check
        self._salt = os.urandom(32)  # the cache's key: nothing outside this process knows it
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._decoy: str | None = None
        self.checks = 0  # slow hashes run (a metric)

    @classmethod
    def nobody(cls) -> BasicVerifier:
        """A verifier that lets nobody in (its file could not be read at a reload: the route
        fails closed rather than open)."""
        return cls(Htpasswd("(none)", {}))

    @classmethod
    def shared_pool(cls, workers: int = 2) -> ThreadPoolExecutor:
        """One small pool per process: hashing is CPU work, more threads than cores only
        queue (and bcrypt/argon2 release the GIL while they hash)."""
        if cls._POOL is None:
            cls._POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lbrec-auth")
        return cls._POOL

    def _key(self, user: str, password: str, stored: str) -> bytes:
        data = b"\0".join((user.encode(), password.encode(), stored.encode()))
        return hashlib.blake2b(data, key=self._salt, digest_size=32).digest()

    def _cached(self, key: bytes) -> bool:
        expiry = self._cache.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._cache[key]
            return False
        self._cache.move_to_end(key)
        return True

    def _remember(self, key: bytes) -> None:
        self._cache[key] = self._clock() + self._ttl
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    def _decoy_hash(self) -> str:
        """A bcrypt hash of nothing, for unknown users (same cost as a real check)."""
        if self._decoy is None:
            stored = next(iter(self.users.values()), "")
            if stored.startswith(_BCRYPT):
                import bcrypt

                cost = int(stored.split("$")[2])
                self._decoy = bcrypt.hashpw(b"-", bcrypt.gensalt(rounds=cost)).decode()
            else:
                self._decoy = stored  # an argon2 check against another's hash: fails, same cost
        return self._decoy

    def _check_as(self, stored: str | None, password: str) -> bool:
        """In the pool: one check, against the decoy for an unknown user (made here on first
        use: a bcrypt of the file's cost, too slow for the loop)."""
        return self._check(stored if stored is not None else self._decoy_hash(), password)

    async def verify(self, user: str, password: str) -> bool:
        """Whether ``user``:``password`` is right. A verified pair is remembered for the TTL;
        a wrong one costs a hash every time. Raises :class:`Busy` past ``max_pending``."""
        stored = self.users.get(user)
        key = self._key(user, password, stored or "")
        if stored is not None and self._cached(key):
            return True
        if self._pending >= self._max_pending:
            raise Busy
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            executor = self._executor or self.shared_pool()
            self.checks += 1
            ok = await loop.run_in_executor(executor, self._check_as, stored, password)
        finally:
            self._pending -= 1
        if ok and stored is not None:
            self._remember(key)
            return True
        return False


# -- the header, the challenge, the log -------------------------------------------------------


def parse_basic(value: bytes) -> tuple[str, str] | None:
    """PURE. ``Authorization: Basic base64(user:password)`` (RFC 7617, UTF-8) as (user,
    password); None for another scheme or anything malformed."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return None
    return user, password


def challenge(realm: str) -> tuple[bytes, bytes]:
    """The 401's ``WWW-Authenticate`` header field (the realm is checked by the schema: no
    quote, backslash or control character)."""
    return b"WWW-Authenticate", b'Basic realm="%s", charset="UTF-8"' % realm.encode("utf-8")


_SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization"})


def redact_headers(
    headers: Iterable[tuple[bytes, bytes]], *, also: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """PURE. Header fields fit for a log: ``Authorization`` and ``Proxy-Authorization`` (and
    ``also``, lower case, e.g. ``cookie``) replaced by ``[redacted]``."""
    hidden = _SECRET_HEADERS | also
    return [(name, b"[redacted]" if name.lower() in hidden else value) for name, value in headers]
