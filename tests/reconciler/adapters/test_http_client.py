"""The hardened HTTP client (issue 20): no redirects, one deadline for the whole exchange, a cap
on the body, headers only to the URL's host, typed results and errors. Against real servers on
127.0.0.1 (tests/reconciler/local_http.py)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lbrec.reconciler.adapters import http_client
from lbrec.reconciler.adapters.deadline import DeadlineTLSSocket
from lbrec.reconciler.adapters.http_client import (
    ConnectFailed,
    HttpError,
    InvalidRequest,
    ProtocolError,
    Timeout,
    get,
    post_json,
)

from ..local_http import Seen, answering, huge_body, redirecting, serve, trickling

# The deadline the slow servers are given, and a bound on the call that only the bug breaks
# (a per-read timeout lets a trickling server hold the caller for as long as it likes).
DEADLINE = 1.0
GENEROUS = 8.0


def test_an_answer_comes_back_with_status_headers_and_body() -> None:
    with answering(200, b'{"a": 1}', (("X-Thing", "yes"),)) as server:
        response = get(server.url + "/path?q=1", timeout=5)
    assert response.ok and response.status == 200
    assert response.json() == {"a": 1}
    assert response.header("x-thing") == "yes"
    assert response.truncated is False
    assert server.seen[0].request_line == "GET /path?q=1 HTTP/1.1"
    assert server.seen[0].header("Host") == f"127.0.0.1:{server.port}"


def test_post_json_sends_the_payload_as_json() -> None:
    with answering(204, b"") as server:
        response = post_json(server.url + "/hook", {"b": 2, "a": [1]}, timeout=5)
    assert response.status == 204 and response.ok
    seen = server.seen[0]
    assert seen.request_line == "POST /hook HTTP/1.1"
    assert seen.header("Content-Type") == "application/json"
    assert json.loads(seen.body) == {"a": [1], "b": 2}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_returned_never_followed(status: int) -> None:
    with (
        answering(200, b"secret") as elsewhere,
        redirecting(elsewhere.url + "/internal", status) as server,
    ):
        got = get(server.url, timeout=5, headers={"Authorization": "Bearer tok"})
        posted = post_json(server.url, {"x": 1}, timeout=5)
    assert got.status == status and posted.status == status
    assert got.is_redirect and not got.ok
    assert got.location == elsewhere.url + "/internal"
    assert got.describe() == f"answered {status} (to {elsewhere.url}/internal)"
    assert server.seen[0].header("Authorization") == "Bearer tok"
    assert elsewhere.seen == [], "the redirect was followed"


def test_headers_never_go_to_a_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with answering(200, b"proxied") as proxy, answering(200, b"direct") as server:
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        response = get(server.url, timeout=5, headers={"Authorization": "Bearer tok"})
    assert response.body == b"direct"
    assert proxy.seen == []


@pytest.mark.parametrize("head_first", [False, True], ids=["trickling-head", "trickling-body"])
def test_a_trickling_server_cannot_hold_the_caller_past_the_deadline(head_first: bool) -> None:
    with trickling(head_first=head_first, interval=0.2) as server:
        started = time.monotonic()
        with pytest.raises(Timeout) as caught:
            get(server.url, timeout=DEADLINE)
        took = time.monotonic() - started
    assert took < GENEROUS, f"held for {took:.1f}s with a {DEADLINE}s deadline"
    assert isinstance(caught.value, TimeoutError)
    assert server.url in str(caught.value) and "1s" in str(caught.value)


def test_no_body_asked_means_a_trickling_body_costs_nothing() -> None:
    with trickling(head_first=True, interval=0.5) as server:
        response = get(server.url, timeout=5, max_body=0)
    assert response.status == 200
    assert response.body == b"" and response.truncated


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_read_only_up_to_the_cap(chunked: bool) -> None:
    with huge_body(chunked=chunked) as server:
        small = get(server.url, timeout=10)
        larger = get(server.url, timeout=10, max_body=100_000)
    assert len(small.body) == http_client.DEFAULT_MAX_BODY and small.truncated
    assert len(larger.body) == 100_000 and larger.truncated
    with pytest.raises(ProtocolError, match="cap"):
        small.json()


def test_a_body_up_to_the_cap_is_whole() -> None:
    with answering(200, b"z" * 4096) as server:
        response = get(server.url, timeout=5, max_body=4096)
    assert response.body == b"z" * 4096 and not response.truncated


def test_connection_refused_is_a_connect_failure_naming_the_url() -> None:
    with socket.socket() as probe:  # a port nobody listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/x"
        with pytest.raises(ConnectFailed) as caught:
            get(url, timeout=5)
    assert str(caught.value).startswith(f"GET {url}: cannot connect")


def test_a_peer_that_is_not_http_is_a_protocol_error() -> None:
    def handle(conn: socket.socket, _: Seen, __: object) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH\r\n")

    with serve(handle) as server, pytest.raises(ProtocolError, match="not an HTTP answer"):
        get(server.url, timeout=5)


def test_a_peer_that_closes_at_once_is_a_protocol_error() -> None:
    def handle(conn: socket.socket, _: Seen, __: object) -> None:
        conn.shutdown(socket.SHUT_RDWR)

    with serve(handle) as server, pytest.raises(HttpError, match="closed"):
        get(server.url, timeout=5)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/x", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1:99999/", "not a valid URL"),
        ("http://127.0.0.1/a b", "whitespace or control"),
        ("http://127.0.0.1/a\r\nX-Injected: 1", "whitespace or control"),
    ],
)
def test_an_unusable_url_is_refused_before_any_connection(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        get(url, timeout=5)


def test_credentials_in_the_url_are_refused_and_never_shown() -> None:
    with pytest.raises(InvalidRequest) as caught:
        get("http://user:s3cret@127.0.0.1:1/x", timeout=5)
    assert "s3cret" not in str(caught.value)
    assert "credentials in the URL" in str(caught.value)
    assert caught.value.url == "http://127.0.0.1:1/x"


def test_a_header_with_a_line_break_is_refused() -> None:
    with answering() as server, pytest.raises(InvalidRequest, match="header"):
        get(server.url, timeout=5, headers={"X-A": "1\r\nX-Injected: 2"})


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_a_deadline_must_be_a_positive_number(timeout: float) -> None:
    with pytest.raises(InvalidRequest, match="timeout"):
        get("http://127.0.0.1:1/", timeout=timeout)


def test_an_unanswered_name_lookup_counts_against_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo
    release = threading.Event()

    def slow(host: str, *args: object, **kwargs: object) -> object:
        numeric = int(kwargs.get("flags", 0)) & socket.AI_NUMERICHOST  # type: ignore[call-overload]
        if host == "slow.invalid" and not numeric:
            release.wait(30)
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    started = time.monotonic()
    try:
        with pytest.raises(Timeout):
            get("http://slow.invalid/", timeout=DEADLINE)
    finally:
        release.set()
    assert time.monotonic() - started < GENEROUS


def _self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handle(conn: socket.socket, _: Seen, __: object) -> None:
        pass

    # A TLS listener: the client's handshake fails on the self-signed certificate.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(10)

        def accept_one() -> None:
            try:
                conn, _ = listener.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

        server = threading.Thread(target=accept_one, daemon=True)
        server.start()
        with pytest.raises(ConnectFailed, match="TLS verification failed"):
            get(f"https://127.0.0.1:{port}/", timeout=5)
        server.join(10)


def test_https_through_a_trusted_certificate_keeps_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    client_context.sslsocket_class = DeadlineTLSSocket
    monkeypatch.setattr(http_client, "_tls", client_context)
    stop = threading.Event()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(10)

        def trickle() -> None:
            try:
                conn, _ = listener.accept()
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(10)
                    tls.recv(4096)
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 10:
                        if stop.is_set():
                            return
                        tls.sendall(bytes([byte]))
                        time.sleep(0.2)
            except (OSError, ssl.SSLError):
                pass

        server = threading.Thread(target=trickle, daemon=True)
        server.start()
        started = time.monotonic()
        with pytest.raises(Timeout):
            get(f"https://127.0.0.1:{port}/", timeout=DEADLINE)
        stop.set()
        server.join(10)
    assert time.monotonic() - started < GENEROUS
