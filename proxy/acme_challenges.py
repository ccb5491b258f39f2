"""The ACME challenges the proxy answers for the reconciler's client (reconciler/adapters/acme.py).

The client writes them under backends.json's ``tls.acme_dir``; the proxy only reads:

* ``http-01/<token>``: the key authorization, the answer of
  ``GET /.well-known/acme-challenge/<token>`` on the plain listener (proxy/front.py);
* ``tls-alpn-01/<name>.pem`` and ``.key``: the RFC 8737 certificate presented to a ClientHello
  for ``<name>`` whose ALPN is exactly ``acme-tls/1`` (proxy/tls_transport.py), and to no one
  else.

Nothing else under that folder is ever served (the ACME account's key lives beside it): a
token must be base64url, a name a DNS name, and both are joined to the folder only then.
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path

__all__ = ["ACME_TLS_ALPN", "Challenges"]

_log = logging.getLogger("lbrec.proxy.acme")

ACME_TLS_ALPN = "acme-tls/1"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_MAX_KEY_AUTHORIZATION = 1024  # a token, a dot and a thumbprint: about 90 bytes


class Challenges:
    """Reads the challenges of one ``acme_dir``; TLS-ALPN-01 contexts cached by file mtime."""

    __slots__ = ("_contexts", "folder")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._contexts: dict[str, tuple[int, ssl.SSLContext]] = {}

    def http01(self, token: str) -> bytes | None:
        """The key authorization of ``token``, or None (no such challenge, or not a token)."""
        if not _TOKEN.match(token):
            return None
        try:
            with (self.folder / "http-01" / token).open("rb") as handle:
                data = handle.read(_MAX_KEY_AUTHORIZATION + 1)
        except OSError:
            return None
        if len(data) > _MAX_KEY_AUTHORIZATION:
            return None
        return data.strip()

    def tls_alpn01(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context presenting ``server_name``'s challenge certificate, or None."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        if not _NAME.match(name):
            return None
        cert = self.folder / "tls-alpn-01" / f"{name}.pem"
        key = self.folder / "tls-alpn-01" / f"{name}.key"
        try:
            stamp = cert.stat().st_mtime_ns ^ key.stat().st_mtime_ns
        except OSError:
            self._contexts.pop(name, None)
            return None
        cached = self._contexts.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols([ACME_TLS_ALPN])
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as err:
            _log.warning("acme: cannot load the tls-alpn-01 certificate of %s: %s", name, err)
            return None
        self._contexts[name] = (stamp, context)
        return context
