"""PURE (but for the codecs' own C code). Compression of a route's answers (issue 23): which
coding a client gets (Accept-Encoding with q-values), whether an answer may be compressed at
all, the answer's head rewritten, and a streaming encoder that never holds a whole body.

Codings: ``gzip`` (the standard library's zlib), ``br`` (the ``brotli`` package), ``zstd`` (the
``zstandard`` package). The two packages are imported on first use: when one is missing, only
that coding is off (:func:`available`), never the route.

Not compressed (the answer passes as it is):
- a type that does not shrink: images (but SVG), video, audio, archives, fonts in WOFF/WOFF2,
  anything already compressed; only text types, JSON, JavaScript, XML, SVG and a few more
  (:func:`compressible_type`);
- an answer with a ``Content-Encoding`` (no double compression), ``Cache-Control:
  no-transform``, a range (206, or any ``Content-Range``), a ``Content-Length`` below
  ``min_size`` (a few hundred bytes only grow), no body (HEAD, 204, 304, 1xx);
- an answer that sets a cookie, unless the route says ``compress: {with_cookies: true}``:
  BREACH (2013) recovers a secret from the *size* of compressed answers that reflect both the
  secret and attacker-chosen text. An answer setting a cookie is the likeliest to carry a secret
  (a session, a CSRF token), so it is not compressed by default; a page that reflects user input
  next to a CSRF token in its *body* is still exposed, which only the application can fix
  (per-request token masking, as Rails and Django do). docs/routes.md says the same.

The head of a compressed answer: ``Content-Encoding`` set, ``Vary: Accept-Encoding`` added or
merged (also on an eligible answer that the client did not ask to compress: a cache must not
hand the plain copy to a client that wants it compressed or the reverse), ``Content-Length``
and ``Accept-Ranges`` dropped (the exchange frames the body chunked, or by close for HTTP/1.0),
a strong ``ETag`` weakened (``W/``: the bytes differ from the uncompressed representation's).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .config import CompressSettings

__all__ = [
    "Decision",
    "Encoder",
    "available",
    "compressible_type",
    "decide",
    "negotiate",
    "new_encoder",
    "rewrite_head",
    "settings_of",
]

Headers = Sequence[tuple[bytes, bytes]]

# Levels: what Caddy's `encode` uses for gzip (5) and zstd (its "default", level 3); brotli at
# 4, the usual choice for on-the-fly compression (5+ costs 2-3x the CPU for a few % more).
GZIP_LEVEL: Final = 5
BROTLI_QUALITY: Final = 4
ZSTD_LEVEL: Final = 3

_TEXT_TYPES = frozenset(
    {
        b"application/json",
        b"application/javascript",
        b"application/x-javascript",
        b"application/ecmascript",
        b"application/xml",
        b"application/xhtml+xml",
        b"application/rss+xml",
        b"application/atom+xml",
        b"application/x-ndjson",
        b"application/graphql-response+json",
        b"application/manifest+json",
        b"application/wasm",
        b"application/x-yaml",
        b"application/yaml",
        b"application/toml",
        b"application/vnd.ms-fontobject",
        b"font/ttf",
        b"font/otf",
        b"image/svg+xml",
        b"image/x-icon",
        b"image/bmp",
    }
)
# Text that is a stream of events: compressing it would need a flush after each event, and a
# proxy must not delay one; left alone, as Caddy and nginx do by default.
_STREAM_TYPES = frozenset({b"text/event-stream"})


def compressible_type(content_type: bytes) -> bool:
    """PURE. Whether a ``Content-Type`` is worth compressing: text, JSON, JS, XML, SVG, ..."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if not media or media in _STREAM_TYPES:
        return False
    if media.startswith(b"text/") or media in _TEXT_TYPES:
        return True
    return media.endswith((b"+json", b"+xml"))


# -- which coding: Accept-Encoding (RFC 9110 12.5.3) ------------------------------------------


_MODULES: dict[str, Any] = {}


def _module(coding: str) -> Any:
    """The codec's module, imported on first use; None when it is not installed."""
    if coding not in _MODULES:
        try:
            if coding == "br":
                import brotli

                _MODULES[coding] = brotli
            elif coding == "zstd":
                import zstandard

                _MODULES[coding] = zstandard
            else:
                _MODULES[coding] = zlib
        except ImportError:
            _MODULES[coding] = None
    return _MODULES[coding]


def available(coding: str) -> bool:
    """Whether this proxy can produce ``coding`` (its package is installed)."""
    return _module(coding) is not None


def _qvalue(params: list[bytes]) -> float:
    for param in params:
        name, _, value = param.strip().partition(b"=")
        if name.strip().lower() == b"q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def negotiate(accept_encoding: bytes | None, offered: Sequence[str]) -> str | None:
    """PURE (given the installed codecs). The coding to answer with: the highest q-value among
    ``offered`` (the route's, in the server's order of preference, which breaks ties), ``*``
    standing for codings not named, ``q=0`` refusing; None (identity) when the client sent no
    Accept-Encoding, accepts none of them, or their packages are missing."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    star: float | None = None
    for item in accept_encoding.split(b","):
        token, *params = item.split(b";")
        name = token.strip().lower()
        if not name:
            continue
        q = _qvalue(params)
        if name == b"*":
            star = q
        else:
            text = name.decode("latin-1")
            weights[text] = max(weights.get(text, q), q)
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q and available(coding):
            best, best_q = coding, q
    return best


# -- may this answer be compressed ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one answer: compress with ``coding``, or not (``reason``, for the
    metrics and the access log); ``vary`` when ``Vary: Accept-Encoding`` belongs on it."""

    coding: str | None
    reason: str
    vary: bool


_NO_BODY_STATUSES = frozenset({204, 206, 304})


def settings_of(compress: bool | CompressSettings | None) -> CompressSettings | None:
    """A route's ``compress`` as settings: None when it is off."""
    if compress is None or compress is False:
        return None
    return CompressSettings() if compress is True else compress


def decide(
    *,
    method: bytes,
    accept_encoding: bytes | None,
    status: int,
    headers: Headers,
    settings: CompressSettings,
) -> Decision:
    """PURE. Whether to compress one answer (its status and head as the backend sent them).
    A HEAD answer is never compressed, but says ``Vary: Accept-Encoding`` when the GET's would
    (caches key both alike)."""
    decision = _decide_body(accept_encoding, status, headers, settings)
    return decision if method != b"HEAD" else Decision(None, "no body", decision.vary)


def _decide_body(
    accept_encoding: bytes | None, status: int, headers: Headers, settings: CompressSettings
) -> Decision:
    if status < 200 or status in _NO_BODY_STATUSES:
        return Decision(None, "no body" if status != 206 else "range", False)
    content_type = b""
    length: int | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return Decision(None, "already encoded", False)
        if lowered == b"content-range":
            return Decision(None, "range", False)
        if lowered == b"cache-control" and b"no-transform" in value.lower():
            return Decision(None, "no-transform", False)
        if lowered == b"set-cookie" and not settings.with_cookies:
            return Decision(None, "sets a cookie (BREACH)", False)
        if lowered == b"content-type":
            content_type = value
        elif lowered == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return Decision(None, "bad content-length", False)
    if not compressible_type(content_type):
        return Decision(None, "type", False)
    if length is not None and length < settings.min_size:
        return Decision(None, "small", True)
    coding = negotiate(accept_encoding, settings.codings)
    if coding is None:
        return Decision(None, "not accepted", True)
    return Decision(coding, "compressed", True)


def _merge_vary(value: bytes) -> bytes:
    tokens = [t.strip().lower() for t in value.split(b",")]
    if b"*" in tokens or b"accept-encoding" in tokens:
        return value
    return value + b", Accept-Encoding" if value.strip() else b"Accept-Encoding"


_DROPPED = frozenset({b"content-length", b"accept-ranges"})


def rewrite_head(headers: Headers, decision: Decision) -> list[tuple[bytes, bytes]]:
    """PURE. The answer's header fields for ``decision``: unchanged but for ``Vary`` when not
    compressed; else with Content-Encoding, Vary, no Content-Length / Accept-Ranges, and a weak
    ETag. The exchange then frames the body chunked (or by close for HTTP/1.0)."""
    out: list[tuple[bytes, bytes]] = []
    varied = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"vary" and decision.vary and not varied:
            out.append((name, _merge_vary(value)))
            varied = True
            continue
        if decision.coding is not None:
            if lowered in _DROPPED or lowered == b"content-encoding":
                continue
            if lowered == b"etag" and not value.lstrip().startswith(b"W/"):
                out.append((name, b"W/" + value.strip()))
                continue
        out.append((name, value))
    if decision.vary and not varied:
        out.append((b"Vary", b"Accept-Encoding"))
    if decision.coding is not None:
        out.append((b"Content-Encoding", decision.coding.encode("ascii")))
    return out


# -- the streaming encoder --------------------------------------------------------------------


class Encoder:
    """Compresses one answer's body chunk by chunk: ``feed`` each chunk as it comes from the
    backend, ``flush`` when the backend has nothing more ready (so a slow or streaming answer
    is not held back in the compressor's window), ``finish`` at its end. Memory is the codec's
    window (zlib 256 KiB, brotli 512 KiB (lgwin 19), zstd 3 ~1-2 MiB), never the body."""

    __slots__ = ("_flush_mode", "_obj", "coding", "size_in", "size_out")

    def __init__(self, coding: str, level: int | None = None) -> None:
        module = _module(coding)
        if module is None:
            raise ValueError(f"coding {coding!r} is not available (its package is missing)")
        self.coding = coding
        self.size_in = 0
        self.size_out = 0
        if coding == "gzip":
            self._obj: Any = zlib.compressobj(level or GZIP_LEVEL, zlib.DEFLATED, 16 + 15)
            self._flush_mode: Any = zlib.Z_SYNC_FLUSH
        elif coding == "br":
            # a 512 KiB window (lgwin 19, nginx's brotli_window default): the default 4 MiB
            # would let one answer hold megabytes before a byte goes out
            self._obj = module.Compressor(
                quality=BROTLI_QUALITY if level is None else level, lgwin=19
            )
            self._flush_mode = None
        elif coding == "zstd":
            cctx = module.ZstdCompressor(level=ZSTD_LEVEL if level is None else level)
            self._obj = cctx.compressobj()
            self._flush_mode = module.COMPRESSOBJ_FLUSH_BLOCK
        else:
            raise ValueError(f"unknown coding {coding!r}")

    def _out(self, data: bytes) -> bytes:
        self.size_out += len(data)
        return data

    def feed(self, chunk: bytes) -> bytes:
        """Compressed bytes ready after ``chunk`` (often b"": the codec keeps a window)."""
        self.size_in += len(chunk)
        if not chunk:
            return b""
        if self.coding == "br":
            return self._out(self._obj.process(chunk))
        return self._out(self._obj.compress(chunk))

    def flush(self) -> bytes:
        """Everything fed so far, decodable by the client now (a sync flush)."""
        if self.coding == "br":
            return self._out(self._obj.flush())
        return self._out(self._obj.flush(self._flush_mode))

    def finish(self) -> bytes:
        """The end of the compressed stream; the encoder is done."""
        if self.coding == "br":
            return self._out(self._obj.finish())
        return self._out(self._obj.flush())


def new_encoder(decision: Decision) -> Encoder | None:
    """The encoder for a decision, None when the answer passes as it is."""
    return None if decision.coding is None else Encoder(decision.coding)
