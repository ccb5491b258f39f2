"""PURE. Which route serves a request: by host (exact, then ``*.domain``, then any) and by path
prefix (longest first), as Traefik's routers and kamal-proxy's ``--host``/``--path-prefix`` do.

The table is built once per pool (a reload builds a new one) and matching is a dictionary
lookup plus a walk over that host's prefixes, longest first: a handful of comparisons.

Paths are matched segment-wise (``/api`` and ``/api/`` both match ``/api``, ``/api/x`` and
``/api?q``, never ``/apix``) on a normalised copy of the request's path: percent-encoded
unreserved characters decoded (``/%61pi`` is ``/api``), runs of slashes merged (``//api`` is
``/api``) and dot segments resolved (``/x/../api`` is ``/api``), so that no spelling reaches
a route's backends around a more specific route (the one that may carry access control).
What is forwarded is the path as sent, or with the route's prefix stripped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .config import RouteEntry

__all__ = ["Match", "Router", "normalize_path", "split_host"]

_SLASHES = re.compile(rb"//+")
_UNRESERVED_ESCAPE = re.compile(rb"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")


def _unescape(match: re.Match[bytes]) -> bytes:
    return bytes([int(match[1], 16)])


def normalize_path(target: bytes) -> bytes:
    """PURE. The path of a request target for matching: no query, unreserved escapes decoded,
    runs of slashes merged, dot segments resolved (RFC 3986 5.2.4), never empty."""
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    if b"%" in path:
        path = _UNRESERVED_ESCAPE.sub(_unescape, path)
    if not path.startswith(b"/"):
        # absolute-form (http://host/path) or asterisk-form: the path part, or "/"
        if b"://" in path:
            rest = path.split(b"://", 1)[1]
            slash = rest.find(b"/")
            path = rest[slash:] if slash >= 0 else b"/"
        else:
            path = b"/" + path
    if b"//" in path:  # merged, as nginx (merge_slashes), Traefik and Caddy match paths
        path = _SLASHES.sub(b"/", path)
    if b"/." in path:
        out: list[bytes] = []
        parts = path.split(b"/")[1:]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == b".":
                if last:
                    out.append(b"")
                continue
            if part == b"..":
                if out:
                    out.pop()
                if last:
                    out.append(b"")
                continue
            out.append(part)
        path = b"/" + b"/".join(out)
    return path


def split_host(authority: bytes) -> tuple[str, str | None]:
    """PURE. ``Shop.Example.COM.:8443`` -> (``shop.example.com``, ``8443``): lower case, no
    trailing dot; IPv6 literals keep their brackets."""
    text = authority.decode("latin-1").strip().lower()
    port: str | None = None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest.startswith(":"):
            port = rest[1:] or None
        return host, port
    if ":" in text:
        text, port = text.rsplit(":", 1)
        port = port or None
    return text.rstrip("."), port


@dataclass(frozen=True, slots=True)
class Match:
    """The route a request takes: its index in the config's ``routes`` and its prefix."""

    index: int
    route: RouteEntry
    prefix: bytes  # the matched prefix without its trailing slash ("" for "/")

    def forwarded_target(self, target: bytes) -> bytes:
        """The request target sent upstream: as sent, or without the prefix (strip_prefix),
        always starting with '/'."""
        if not self.route.strip_prefix or not self.prefix:
            return target
        if not target.startswith(self.prefix):  # matched through normalisation only
            return target
        rest = target[len(self.prefix) :]
        if not rest or rest[:1] in (b"?", b"#"):
            return b"/" + rest
        return rest if rest.startswith(b"/") else target


class Router:
    """The routes of one pool, indexed for matching."""

    __slots__ = ("_any", "_exact", "_wildcard", "routes")

    def __init__(self, routes: Sequence[RouteEntry]) -> None:
        self.routes = tuple(routes)
        # host ("name" or "name:port") -> [(prefix, index)], longest prefix first
        self._exact: dict[str, list[tuple[bytes, int]]] = {}
        self._wildcard: dict[str, list[tuple[bytes, int]]] = {}  # "example.com" for *.example.com
        self._any: list[tuple[bytes, int]] = []
        for index, route in enumerate(self.routes):
            prefix = route.path.rstrip("/").encode()
            if route.host is None:
                table = self._any
            elif route.host.startswith("*."):
                table = self._wildcard.setdefault(route.host[2:], [])
            else:
                table = self._exact.setdefault(route.host, [])
            table.append((prefix, index))
        for table in (*self._exact.values(), *self._wildcard.values(), self._any):
            table.sort(key=lambda item: -len(item[0]))

    def __bool__(self) -> bool:
        return bool(self.routes)

    def hosts(self) -> list[str]:
        """Every host name a route names (for certificates): exact and wildcard."""
        return sorted({r.host.split(":")[0] for r in self.routes if r.host is not None})

    def knows(self, authority: bytes) -> bool:
        """Some route is for this host (by name, wildcard, or any host), whatever the path."""
        host, port = split_host(authority)
        if self._any or host in self._exact or (port and f"{host}:{port}" in self._exact):
            return True
        parent = host.partition(".")[2]
        return bool(parent) and (parent in self._wildcard or f"{parent}:{port}" in self._wildcard)

    def match(self, authority: bytes, target: bytes) -> Match | None:
        """The route for a request with Host ``authority`` and request target ``target``;
        None when no route matches (a 404, or 421 over TLS)."""
        host, port = split_host(authority)
        path = normalize_path(target)
        candidates: list[list[tuple[bytes, int]]] = []
        if port is not None and (table := self._exact.get(f"{host}:{port}")) is not None:
            candidates.append(table)
        if (table := self._exact.get(host)) is not None:
            candidates.append(table)
        dot = host.find(".")
        if dot > 0:
            parent = host[dot + 1 :]
            if port is not None and (table := self._wildcard.get(f"{parent}:{port}")):
                candidates.append(table)
            if (table := self._wildcard.get(parent)) is not None:
                candidates.append(table)
        candidates.append(self._any)
        for table in candidates:
            for prefix, index in table:
                if _under(path, prefix):
                    return Match(index, self.routes[index], prefix)
        return None


def _under(path: bytes, prefix: bytes) -> bool:
    """``path`` is ``prefix`` or below it, segment-wise ("" is the root: everything)."""
    if not prefix:
        return True
    if not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or path[len(prefix)] == 0x2F  # "/"
