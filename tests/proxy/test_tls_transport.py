"""proxy/tls_transport.py: TLS over memory BIOs with real clients on 127.0.0.1 (Python's ssl
and openssl s_client), under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from lbrec.proxy.tls import CertStore, listener_context, load_certificate
from lbrec.proxy.tls_transport import ClientHello, TlsConnection, parse_client_hello
from tests.support.certs import CertAuthority, as_strings


class Echo(asyncio.Protocol):
    """Echoes every byte back; says which ALPN protocol it was made for."""

    def __init__(self, alpn: str | None, seen: list[str]) -> None:
        self.alpn = alpn
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.seen.append(f"sni={transport.get_extra_info('sni')} alpn={self.alpn}")

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path / "pki")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Server:
    def __init__(self, ca: CertAuthority, challenge: ssl.SSLContext | None = None) -> None:
        self.store = CertStore.load([as_strings(ca.leaf("a", ["a.example"]))])
        self.context = listener_context(lambda: self.store)
        context = self.context
        self.challenge = challenge
        self.seen: list[str] = []
        self.failures: list[str] = []

        def choose(hello: ClientHello | None) -> ssl.SSLContext:
            if challenge is not None and hello is not None and hello.alpn == ("acme-tls/1",):
                return challenge
            return context

        self.factory: Callable[[], TlsConnection] = lambda: TlsConnection(
            choose,
            lambda alpn: Echo(alpn, self.seen),
            handshake_timeout=1.0,
            on_failure=self.failures.append,
        )


async def _serve(server: Server) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    listening = await loop.create_server(server.factory, "127.0.0.1", 0)
    return listening, listening.sockets[0].getsockname()[1]


async def _client(
    ca: CertAuthority, port: int, name: str | None, alpn: list[str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cafile=str(ca.pem))
    if alpn:
        context.set_alpn_protocols(alpn)
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=name), 5
    )


def _run(loop_kind: str, coro_fn: Callable[[], object]) -> None:
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(coro_fn())  # type: ignore[arg-type]
    else:
        asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_echo_a_megabyte_both_ways(ca: CertAuthority, loop_kind: str) -> None:
    server = Server(ca)

    async def main() -> None:
        listening, port = await _serve(server)
        reader, writer = await _client(ca, port, "a.example", ["http/1.1"])
        payload = bytes(range(256)) * 4096  # 1 MiB
        writer.write(payload)
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        assert got == payload
        writer.close()
        listening.close()

    _run(loop_kind, main)
    assert server.seen == ["sni=a.example alpn=http/1.1"]


def test_an_unknown_name_gets_the_unrecognized_name_alert(
    ca: CertAuthority, loop_kind: str
) -> None:
    """asyncio and uvloop close without the alert ("unexpected EOF"); this layer sends it."""
    server = Server(ca)

    async def main() -> None:
        listening, port = await _serve(server)
        with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
            await _client(ca, port, "unknown.example")
        out = await asyncio.create_subprocess_exec(
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "other.example",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        text = (await asyncio.wait_for(out.communicate(), 10))[0].decode()
        assert "unrecognized name" in text
        listening.close()

    _run(loop_kind, main)
    assert server.seen == [] and len(server.failures) == 2


def test_the_client_hello_is_read_before_the_handshake(ca: CertAuthority, loop_kind: str) -> None:
    """An ACME TLS-ALPN-01 validation (acme-tls/1 alone) gets the challenge context; a browser
    of the same name gets the site's certificate."""
    challenge_cert = ca.leaf("challenge", ["a.example"])
    challenge = load_certificate(*challenge_cert).context
    challenge.set_alpn_protocols(["acme-tls/1"])
    server = Server(ca, challenge)

    async def main() -> None:
        listening, port = await _serve(server)
        _reader, writer = await _client(ca, port, "a.example", ["acme-tls/1"])
        peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        _reader2, writer2 = await _client(ca, port, "a.example", ["h2", "http/1.1"])
        site = writer2.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer2.close()
        assert peer != site
        listening.close()

    _run(loop_kind, main)
    assert server.seen == ["sni=a.example alpn=acme-tls/1", "sni=a.example alpn=h2"]


def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    ca: CertAuthority, loop_kind: str
) -> None:
    server = Server(ca)

    async def main() -> None:
        listening, port = await _serve(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01")  # the start of a record, then nothing
        assert await asyncio.wait_for(reader.read(), 5) == b""
        listening.close()

    _run(loop_kind, main)
    assert server.failures == ["no handshake within 1s"]


def test_plain_http_on_the_tls_port_gets_a_plain_400(ca: CertAuthority, loop_kind: str) -> None:
    server = Server(ca)

    async def main() -> None:
        listening, port = await _serve(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert answer.endswith(b"This is the HTTPS port: use https://\n")
        listening.close()

    _run(loop_kind, main)
    assert server.seen == [] and server.failures


def test_parse_client_hello_of_a_real_client() -> None:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="Shop.Example.com")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    assert parse_client_hello(hello) == ClientHello("shop.example.com", ("h2", "http/1.1"))
    for cut in (0, 4, 5, 40, len(hello) - 1):
        assert parse_client_hello(hello[:cut]) is None
    assert parse_client_hello(b"GET / HTTP/1.1\r\n") is None
