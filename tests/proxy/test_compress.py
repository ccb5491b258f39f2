"""proxy/compress.py: negotiation, eligibility, the head rewritten, streaming round trips."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from lbrec.proxy import compress
from lbrec.proxy.compress import (
    Decision,
    Encoder,
    compressible_type,
    decide,
    negotiate,
    rewrite_head,
    settings_of,
)
from lbrec.proxy.config import CompressSettings

ALL = ("zstd", "br", "gzip")
PAGE = (b"<!doctype html><html><body>" + b"<p>Hello, compressed world</p>\n" * 2000) + b"</html>"


def decode(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return bytes(brotli.decompress(data))
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


# -- negotiation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        (b"", None),
        (b"gzip", "gzip"),
        (b"gzip, deflate, br", "br"),  # the server's order breaks the tie
        (b"gzip, deflate, br, zstd", "zstd"),  # Chromium's
        (b"br;q=0.5, gzip;q=0.9", "gzip"),
        (b"br;q=0, gzip", "gzip"),
        (b"*", "zstd"),
        (b"*;q=0.5, gzip;q=0.8", "gzip"),
        (b"*, zstd;q=0", "br"),
        (b"identity", None),
        (b"deflate", None),
        (b"gzip;q=0", None),
        (b"GZIP ; Q=1.0", "gzip"),
        (b"br;q=abc, gzip", "gzip"),  # a bad q-value refuses that coding
        (b"br;q=2, gzip", "gzip"),
        (b" , ,gzip", "gzip"),
    ],
)
def test_negotiation_follows_q_values(header: bytes | None, expected: str | None) -> None:
    assert negotiate(header, ALL) == expected


def test_only_the_routes_codings_are_offered() -> None:
    assert negotiate(b"br, zstd, gzip", ("gzip",)) == "gzip"
    assert negotiate(b"br", ("gzip",)) is None


def test_a_missing_package_disables_only_its_coding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(compress._MODULES, "br", None)
    assert not compress.available("br")
    assert negotiate(b"br, gzip", ALL) == "gzip"
    with pytest.raises(ValueError, match="not available"):
        Encoder("br")


@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=80))
def test_negotiation_never_fails_on_any_header(header: str) -> None:
    assert negotiate(header.encode("latin-1"), ALL) in (None, *ALL)


# -- eligibility ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"text/html; charset=utf-8", True),
        (b"text/css", True),
        (b"application/json", True),
        (b"application/problem+json", True),
        (b"application/javascript", True),
        (b"image/svg+xml", True),
        (b"application/atom+xml", True),
        (b"TEXT/PLAIN", True),
        (b"image/png", False),
        (b"image/jpeg", False),
        (b"video/mp4", False),
        (b"application/zip", False),
        (b"application/gzip", False),
        (b"font/woff2", False),
        (b"application/octet-stream", False),
        (b"text/event-stream", False),
        (b"", False),
    ],
)
def test_compressible_types(content_type: bytes, expected: bool) -> None:
    assert compressible_type(content_type) is expected


ON = CompressSettings()
HTML = [(b"Content-Type", b"text/html"), (b"Content-Length", b"50000")]


def _decide(
    headers: list[tuple[bytes, bytes]],
    *,
    status: int = 200,
    method: bytes = b"GET",
    accept: bytes | None = b"gzip, br, zstd",
    settings: CompressSettings = ON,
) -> Decision:
    return decide(
        method=method, accept_encoding=accept, status=status, headers=headers, settings=settings
    )


@pytest.mark.parametrize(
    ("extra", "status", "method", "reason"),
    [
        ([(b"Content-Encoding", b"gzip")], 200, b"GET", "already encoded"),
        ([(b"Cache-Control", b"public, no-transform")], 200, b"GET", "no-transform"),
        ([(b"Content-Range", b"bytes 0-9/100")], 200, b"GET", "range"),
        ([], 206, b"GET", "range"),
        ([], 304, b"GET", "no body"),
        ([], 204, b"GET", "no body"),
        ([], 200, b"HEAD", "no body"),
        ([(b"Set-Cookie", b"session=abc")], 200, b"GET", "sets a cookie (BREACH)"),
    ],
)
def test_answers_that_stay_as_they_are(
    extra: list[tuple[bytes, bytes]], status: int, method: bytes, reason: str
) -> None:
    decision = _decide(HTML + extra, status=status, method=method)
    assert (decision.coding, decision.reason) == (None, reason)


def test_small_answers_and_clients_without_it_still_get_vary() -> None:
    small = _decide([(b"Content-Type", b"text/html"), (b"Content-Length", b"100")])
    assert (small.coding, small.reason, small.vary) == (None, "small", True)
    plain = _decide(HTML, accept=None)
    assert (plain.coding, plain.vary) == (None, True)
    assert rewrite_head(HTML, plain) == [*HTML, (b"Vary", b"Accept-Encoding")]
    image = _decide([(b"Content-Type", b"image/png")])
    assert (image.reason, image.vary) == ("type", False)
    png = [(b"Content-Type", b"image/png")]
    assert rewrite_head(png, image) == png


def test_cookies_and_a_configured_size() -> None:
    cookie = [*HTML, (b"Set-Cookie", b"a=b")]
    assert _decide(cookie, settings=CompressSettings(with_cookies=True)).coding == "zstd"
    small = [(b"Content-Type", b"text/html"), (b"Content-Length", b"100")]
    assert _decide(small, settings=CompressSettings(min_size=0)).coding == "zstd"
    assert _decide([(b"Content-Type", b"text/html")]).coding == "zstd"  # chunked: no length
    assert _decide([*HTML, (b"Content-Encoding", b"identity")]).coding == "zstd"


def test_settings_of_a_route() -> None:
    assert settings_of(None) is None and settings_of(False) is None
    assert settings_of(True) == CompressSettings()
    own = CompressSettings(codings=("gzip",))
    assert settings_of(own) is own


# -- the head ---------------------------------------------------------------------------------


def test_the_head_of_a_compressed_answer() -> None:
    head = [
        (b"Content-Type", b"text/html"),
        (b"Content-Length", b"50000"),
        (b"ETag", b'"v1"'),
        (b"Accept-Ranges", b"bytes"),
        (b"Vary", b"Origin"),
        (b"Cache-Control", b"max-age=60"),
    ]
    out = rewrite_head(head, Decision("br", "compressed", True))
    assert out == [
        (b"Content-Type", b"text/html"),
        (b"ETag", b'W/"v1"'),
        (b"Vary", b"Origin, Accept-Encoding"),
        (b"Cache-Control", b"max-age=60"),
        (b"Content-Encoding", b"br"),
    ]


@pytest.mark.parametrize(
    ("vary", "merged"),
    [
        (b"accept-encoding", b"accept-encoding"),
        (b"Origin, Accept-Encoding", b"Origin, Accept-Encoding"),
        (b"*", b"*"),
        (b"", b"Accept-Encoding"),
    ],
)
def test_vary_is_merged_once(vary: bytes, merged: bytes) -> None:
    out = rewrite_head([(b"Vary", vary)], Decision("gzip", "compressed", True))
    assert out == [(b"Vary", merged), (b"Content-Encoding", b"gzip")]


def test_a_weak_etag_stays_weak() -> None:
    out = rewrite_head([(b"etag", b'W/"x"')], Decision("gzip", "compressed", True))
    assert (b"etag", b'W/"x"') in out


# -- the encoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ALL)
def test_round_trip_whole(coding: str) -> None:
    encoder = Encoder(coding)
    data = encoder.feed(PAGE) + encoder.finish()
    assert decode(coding, data) == PAGE
    assert encoder.size_in == len(PAGE) and encoder.size_out == len(data)
    assert len(data) < len(PAGE) / 10


@pytest.mark.parametrize("coding", ALL)
def test_streaming_with_many_chunks_and_flushes(coding: str) -> None:
    """Thousands of small chunks, a flush now and then: the client decodes each flushed part
    as it comes (a streaming decoder), and the whole at the end."""
    body = os.urandom(50_000).hex().encode() + PAGE  # some entropy, some text
    encoder = Encoder(coding)
    step: Callable[[bytes], bytes]
    if coding == "gzip":
        decoder = zlib.decompressobj(16 + 15)
        step = decoder.decompress
    elif coding == "br":
        bdec = brotli.Decompressor()
        step = bdec.process
    else:
        step = zstandard.ZstdDecompressor().decompressobj().decompress
    received = b""
    sent = 0
    for start in range(0, len(body), 97):
        piece = body[start : start + 97]
        received += step(encoder.feed(piece))
        sent += len(piece)
        if start % (97 * 200) == 0:
            received += step(encoder.flush())
            assert received == body[:sent]  # a flush makes everything so far decodable
    received += step(encoder.finish())
    assert received == body


@pytest.mark.parametrize("coding", ALL)
def test_the_encoder_holds_a_window_not_the_body(coding: str) -> None:
    """8 MiB through the encoder in 16 KiB chunks: what it returns along the way keeps pace
    with what went in (it never buffers the whole body)."""
    encoder = Encoder(coding)
    out = 0
    for _ in range(512):
        out += len(encoder.feed(os.urandom(16384)))  # incompressible: output ~ input
    assert out > 6 * 1024 * 1024  # most of the 8 MiB is already out
    assert encoder.finish() is not None


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(ALL),
    st.lists(st.binary(max_size=3000), max_size=30),
    st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_any_chunks_round_trip(coding: str, chunks: list[bytes], flushes: list[bool]) -> None:
    encoder = Encoder(coding)
    data = b""
    for chunk, flush in zip(chunks, flushes, strict=False):
        data += encoder.feed(chunk)
        if flush:
            data += encoder.flush()
    data += encoder.finish()
    assert decode(coding, data) == b"".join(chunks)


def test_an_unknown_coding_is_refused() -> None:
    with pytest.raises(ValueError):
        Encoder("deflate")
    assert compress.new_encoder(Decision(None, "type", False)) is None
    encoder = compress.new_encoder(Decision("gzip", "compressed", True))
    assert encoder is not None and encoder.coding == "gzip"


def test_a_head_answer_says_vary_when_the_gets_would() -> None:
    """HEAD is never compressed, but caches key it as the GET: Vary when the GET would vary."""
    head = _decide(HTML, method=b"HEAD")
    assert (head.coding, head.reason, head.vary) == (None, "no body", True)
    assert rewrite_head(HTML, head) == [*HTML, (b"Vary", b"Accept-Encoding")]
    image = _decide([(b"Content-Type", b"image/png")], method=b"HEAD")
    assert (image.coding, image.vary) == (None, False)
