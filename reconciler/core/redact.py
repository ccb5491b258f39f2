"""PURE. Credentials never shown: a URL as it may be logged, stored or displayed."""

from __future__ import annotations

import re

__all__ = ["has_userinfo", "redact_url"]

# scheme://userinfo@host...: the userinfo is everything between "//" and the last "@" before
# the path (a password may hold "@" or ":" when it was not percent-encoded). A regex, not
# urllib.parse: that refuses some URLs git accepts (a bad port), and must never echo them.
_SCHEME_URL = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#]*)(?P<rest>.*)$", re.S
)


def redact_url(url: str) -> str:
    """``url`` without its userinfo: ``https://user:token@host/repo.git`` is
    ``https://host/repo.git``. Any ``scheme://`` URL loses its userinfo whole (a token may be
    the user name alone); a scp-like git address (``git@host:org/repo``) has no password and is
    kept; a local path is kept. Only git itself is given the full URL."""
    match = _SCHEME_URL.match(url)
    if match is None:
        return url
    authority = match["authority"]
    if "@" not in authority:
        return url
    host = authority.rsplit("@", 1)[1]
    return f"{match['scheme']}{host}{match['rest']}"


def has_userinfo(url: str) -> bool:
    """``url`` carries credentials (what :func:`redact_url` would strip)."""
    return redact_url(url) != url
