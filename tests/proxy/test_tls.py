"""proxy/tls.py: certificates checked and chosen by SNI, swapped without a new listener; real
handshakes on 127.0.0.1 with Python's own TLS client."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lbrec.proxy.tls import (
    CertificateError,
    CertStore,
    covers,
    listener_context,
    load_certificate,
)
from tests.support.certs import CertAuthority, as_strings


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


@pytest.mark.parametrize(
    ("name", "host", "expected"),
    [
        ("shop.example.com", "shop.example.com", True),
        ("shop.example.com", "SHOP.example.com.", True),
        ("*.example.com", "shop.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("shop.example.com", "api.example.com", False),
    ],
)
def test_covers(name: str, host: str, expected: bool) -> None:
    assert covers(name, host) is expected


def test_a_certificate_is_read_and_described(ca: CertAuthority) -> None:
    cert = load_certificate(*ca.leaf("shop", ["shop.example.com", "*.shop.example.com"]))
    assert cert.names == ("shop.example.com", "*.shop.example.com")
    assert cert.issuer == "lbrec test CA"
    assert cert.covers("www.shop.example.com") and not cert.covers("example.com")
    described = cert.describe()
    assert "key" not in str(sorted(described)) and described["names"] == list(cert.names)


def test_bad_certificates_name_the_file_and_the_reason(ca: CertAuthority, tmp_path: Path) -> None:
    good_cert, good_key = ca.leaf("good", ["a.example"])
    _, other_key = ca.leaf("other", ["b.example"])
    expired = ca.leaf("expired", ["a.example"], days=-1, starts=-10)
    future = ca.leaf("future", ["a.example"], days=10, starts=2)
    nameless = ca.leaf("nameless", [])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        ((tmp_path / "missing.pem", good_key), "missing.pem: cannot read: No such file"),
        ((good_cert, tmp_path / "missing.key"), "missing.key: cannot read"),
        ((garbage, good_key), "garbage.pem: not a PEM certificate"),
        ((good_cert, other_key), "other.key: the key does not match the certificate"),
        (expired, "expired.pem: expired on"),
        (future, "future.pem: not valid before"),
        (nameless, "nameless.pem: names no DNS host"),
    ]
    for (cert_path, key_path), message in cases:
        with pytest.raises(CertificateError) as caught:
            load_certificate(cert_path, key_path)
        assert message in str(caught.value)


def test_a_failed_reload_keeps_the_previous_certificate(ca: CertAuthority) -> None:
    pair = ca.leaf("site", ["a.example"])
    first = CertStore.load([as_strings(pair)])
    assert first.for_name("a.example") is not None and first.errors == ()
    pair[0].write_text("truncated renewal\n")
    second = CertStore.load([as_strings(pair)], previous=first)
    assert second.for_name("a.example") is first.for_name("a.example")
    assert "the previous certificate keeps serving" in second.errors[0]
    assert CertStore.load([as_strings(pair)]).for_name("a.example") is None


def test_sni_lookup_exact_before_wildcard_and_newest_wins(ca: CertAuthority) -> None:
    wild = load_certificate(*ca.leaf("wild", ["*.example.com"]))
    shop = load_certificate(*ca.leaf("shop", ["shop.example.com"]))
    old = load_certificate(*ca.leaf("old", ["api.example.com"], days=5))
    new = load_certificate(*ca.leaf("new", ["api.example.com"], days=60))
    store = CertStore([wild, shop, new, old])
    assert store.for_name("shop.example.com") is shop
    assert store.for_name("www.example.com") is wild
    assert store.for_name("api.example.com") is new
    assert store.for_name("example.com") is None and store.for_name(None) is None


# -- real handshakes ----------------------------------------------------------------------


class _Listener:
    def __init__(self, store: CertStore) -> None:
        self.store = store
        self.context = listener_context(lambda: self.store)


@pytest.fixture
async def listener(ca: CertAuthority) -> AsyncIterator[tuple[_Listener, int]]:
    holder = _Listener(CertStore.load([as_strings(ca.leaf("a", ["a.example"]))]))

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=holder.context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield holder, port
    finally:
        server.close()
        await server.wait_closed()


async def _handshake(
    port: int,
    ca: CertAuthority,
    name: str | None,
    *,
    version: ssl.TLSVersion | None = None,
) -> tuple[str, str]:
    client = ssl.create_default_context(cafile=str(ca.pem))
    if name is None:
        client.check_hostname = False
    if version is not None:
        client.minimum_version = client.maximum_version = version
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=name), 5
    )
    sslobj = writer.get_extra_info("ssl_object")
    peer = sslobj.getpeercert()
    san = ",".join(value for _, value in peer.get("subjectAltName", ()))
    line = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    writer.close()
    return san, line


async def test_sni_picks_the_certificate_and_a_reload_needs_no_new_listener(
    listener: tuple[_Listener, int], ca: CertAuthority
) -> None:
    holder, port = listener
    assert await _handshake(port, ca, "a.example") == ("a.example", "hello")
    # a new site appears, and the first one is renewed: the same listener serves both
    pairs = [ca.leaf("a2", ["a.example"], days=90), ca.leaf("b", ["b.example"])]
    holder.store = CertStore.load([as_strings(p) for p in pairs])
    assert await _handshake(port, ca, "b.example") == ("b.example", "hello")
    new_a = holder.store.for_name("a.example")
    assert new_a is not None and new_a.cert_path.endswith("a2.pem")


@pytest.mark.parametrize("name", ["unknown.example", None])
async def test_a_name_without_a_certificate_gets_no_certificate(
    listener: tuple[_Listener, int], ca: CertAuthority, name: str | None
) -> None:
    """The handshake fails (the loop's own TLS drops the alert: tls_transport.py sends it,
    tested in test_tls_transport.py), never with another site's certificate."""
    _, port = listener
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await _handshake(port, ca, name)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_no_protocol_below_tls_1_2(
    listener: tuple[_Listener, int], ca: CertAuthority, version: ssl.TLSVersion
) -> None:
    _, port = listener
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await _handshake(port, ca, "a.example", version=version)


async def test_tls_1_2_and_1_3_both_work(
    listener: tuple[_Listener, int], ca: CertAuthority
) -> None:
    _, port = listener
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert (await _handshake(port, ca, "a.example", version=version))[1] == "hello"


def test_load_uses_the_clock_it_is_given(ca: CertAuthority) -> None:
    pair = ca.leaf("soon", ["a.example"], days=2)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    with pytest.raises(CertificateError, match="expired"):
        load_certificate(*pair, now=later)
