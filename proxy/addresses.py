"""Addresses as lbrec's files and flags write them: HOST:PORT, and networks (CIDR).

The one HOST:PORT parser of both programs (the reconciler imports it through ``config.py``):
callers add their own rules (a host required, port 0 refused) to what it returns.
"""

from __future__ import annotations

import ipaddress

__all__ = ["check_cidrs", "parse_hostport", "split_hostport"]


def split_hostport(value: str) -> tuple[str, int]:
    """The one HOST:PORT parser of the proxy and the reconciler: ``127.0.0.1:8080``,
    ``[::1]:8080``, ``shop.example.com:8080`` or ``:8080`` -> (host without brackets, which
    may be empty, port 0-65535). ValueError otherwise; callers add their own rules (a host
    required, port 0 refused) to what it returns."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT like 127.0.0.1:8080, got {value!r}")
    return host.strip("[]"), int(port)


def parse_hostport(value: str) -> tuple[str, int]:
    """A listener's address: HOST:PORT, where an empty host (``:8080``) is every interface."""
    host, port = split_hostport(value)
    return host or "0.0.0.0", port


def check_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    """Validator of ``trusted_proxies`` and ``auth.allow`` (backends.json, desired-state.yaml)."""
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as err:
            raise ValueError(f"not an IP network (CIDR): {cidr!r}") from err
    return value
