"""Who may talk to the admin listener, and what every answer tells browsers (issue 20
finding 11).

A reading request must name the listener by one of its own names in ``Host`` (421 otherwise):
a loopback name, the address the connection arrived on, or a name of ``LBREC_ADMIN_HOSTS``, so
that a DNS-rebinding page cannot read the pool through a visitor's browser. With a token,
every reading endpoint but ``/-/healthz`` requires it. Every answer tells browsers not to
frame it, sniff it or leak its address. Used by :func:`proxy.admin.make_admin_app`.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .config import ConfigError

__all__ = [
    "ADMIN_HOSTS_ENV",
    "host_middleware",
    "parse_admin_hosts",
    "security_headers",
    "token_middleware",
]

# The operator's extra names for the admin listener (beside loopback names and its own address):
# host names or IP addresses, comma or space separated, no port. From the environment, never
# from backends.json: a name added here is one a rebinding page may use.
ADMIN_HOSTS_ENV = "LBREC_ADMIN_HOSTS"
# Loopback names, and the unspecified addresses: a client that dials the bind address of a
# wildcard listener (``admin: 0.0.0.0:8081``) names it so. No DNS name can rebind to these.
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$"
)
_PORT = re.compile(r"^[0-9]{1,5}$")
# Sent with every answer; the status page replaces the policy with its own (PAGE_POLICY).
_SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}


def _name(text: str) -> str | None:
    """A host name (lower case, without a final dot) or an IP address (canonical), else None."""
    text = text.lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(text))
    text = text.removesuffix(".")
    return text if _HOST_NAME.match(text) else None


def parse_admin_hosts(value: str) -> frozenset[str]:
    """``LBREC_ADMIN_HOSTS``: names or IP addresses (``[v6]`` or bare), comma or space
    separated. Raises :class:`ConfigError` naming the variable and the bad item."""
    names = set()
    for item in re.split(r"[,\s]+", value.strip()):
        if not item:
            continue
        name = _name(item)
        if name is None and ":" in item and not item.startswith("["):
            with contextlib.suppress(ValueError):
                name = str(ipaddress.IPv6Address(item))
        if name is None:
            raise ConfigError(
                f"{ADMIN_HOSTS_ENV}: {item!r} is not a host name or an IP address "
                "(list names only, comma separated: no scheme, port or wildcard)"
            )
        names.add(name)
    return frozenset(names)


def _host_of(header: str) -> str | None:
    """The name of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``), else None."""
    host, port = header.strip(), ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        host, rest = host[: end + 1], host[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif ":" in host:
        host, _, port = host.partition(":")
    if port and not (_PORT.match(port) and int(port) <= 65535):
        return None
    if ":" in host.strip("[]") and not host.startswith("["):
        return None
    return _name(host)


def _local_address(request: web.Request) -> str | None:
    """The address the connection arrived on (canonical), or None (a Unix socket)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or not sockname:
        return None
    try:
        return str(ipaddress.ip_address(str(sockname[0]).partition("%")[0]))
    except ValueError:
        return None


def host_middleware(names: frozenset[str]) -> Any:
    allowed = _LOOPBACK_NAMES | names
    choices = ", ".join(sorted(allowed))

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Reading endpoints only: /-/healthz says "ok" to anyone, and a mutating endpoint
        # (POST /-/sync) is authenticated by its own signature, whatever Host a forwarding
        # TLS proxy passes. No Host at all is no browser (HTTP/1.0 tools).
        header = request.headers.get("Host")
        if request.method in ("GET", "HEAD") and request.path != "/-/healthz" and header:
            name = _host_of(header)
            if name is None or (name not in allowed and name != _local_address(request)):
                return web.Response(
                    status=421,
                    text=(
                        f"admin listener: Host {header[:100]!r} is not one of its names "
                        f"({choices}, or the address it listens on); to reach it by "
                        f"another name, add the name to {ADMIN_HOSTS_ENV}\n"
                    ),
                )
        return await handler(request)

    return check


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def token_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Reading endpoints need the admin token; /-/healthz stays open (container health
        # checks); mutating endpoints (POST /-/sync) check their own token.
        if request.method in ("GET", "HEAD") and request.path != "/-/healthz":
            presented = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(presented, expected):
                return web.json_response(
                    {"error": "admin token required (Authorization: Bearer ...)"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="lbrec"'},
                )
        return await handler(request)

    return check
