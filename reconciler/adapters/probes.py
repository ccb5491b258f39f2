"""EDGE. Probes of this host: is a port free, does an HTTP endpoint answer 200."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request


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
    """GET ``url`` from the host: None on 200, else the answer or the error, for the report."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"GET {url} answered {response.status}"
    except urllib.error.HTTPError as err:
        return f"GET {url} answered {err.code}"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return f"GET {url}: {reason}"
