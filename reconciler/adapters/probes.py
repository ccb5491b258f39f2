"""EDGE. Probes of this host: is a port free, does an HTTP endpoint answer 200."""

from __future__ import annotations

import errno
import socket

from . import http_client


def port_free(host: str, port: int) -> bool:
    """Nobody listens on ``host:port`` (a bind test, SO_REUSEADDR as a server would)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def http_probe(url: str, timeout: float) -> str | None:
    """GET ``url`` from the host: None on 200, else the answer or the error, for the report.

    Through :mod:`.http_client`: ``timeout`` bounds the whole exchange (a backend trickling
    its head cannot hold the pass), a redirect is not followed (it is "answered 302", not
    ready: a redirect to some other service is not this backend's health), and no body is
    read (the status is the verdict)."""
    try:
        response = http_client.get(url, timeout=timeout, max_body=0)
    except http_client.HttpError as err:
        return str(err)
    if response.status == 200:
        return None
    return f"GET {response.url} {response.describe()}"
