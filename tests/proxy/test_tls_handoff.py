"""``lbrec proxy --handoff``: the TLS listener is handed over too (issue 22).

Real processes on loopback, as tests/proxy/test_handoff.py: a bounded load of new TLS
connections (a full handshake and one request each) and of HTTP/1.1 keep-alive requests over
TLS runs while a new proxy process takes the listening sockets over from the running one,
again and again. Every request must succeed, and the TLS port must keep one listening socket,
the same kernel socket from the first process to the last (its inode in /proc/net/tcp): before,
each successor bound its own beside it with SO_REUSEPORT, and connections still queued on the
old one when it closed were reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest

from lbrec.proxy.handoff import HandoffServer, take_over
from tests.proxy.conftest import BackendFactory, config_doc, write_config
from tests.proxy.test_handoff import _hand_over, _start, _wait_serving
from tests.proxy.test_process import _free_port
from tests.support.certs import CertAuthority

RESTARTS = 3
NEW_CONNECTION_CLIENTS = 4
KEEP_ALIVE_CLIENTS = 2
NAME = "shop.example.com"


def _listening_inodes(port: int) -> set[int]:
    """The inodes of the TCP sockets listening on 127.0.0.1:``port`` (/proc/net/tcp)."""
    found: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        if state == "0A" and local == f"0100007F:{port:04X}":
            found.add(inode)
    return found


async def _get(context: ssl.SSLContext, port: int) -> bool:
    """One request on a new TLS connection (Connection: close); True when answered 200."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=NAME), 10
    )
    try:
        writer.write(f"POST /x HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 2\r\n".encode())
        writer.write(b"Connection: close\r\n\r\nhi")
        data = await asyncio.wait_for(reader.read(), 10)
        return data.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


@pytest.mark.slow  # a process tree under seconds of load, as test_handoff.py
@pytest.mark.timeout(120)
async def test_restart_under_https_load_drops_nothing_and_keeps_the_tls_socket(
    backends: BackendFactory, tmp_path: Path
) -> None:
    a = await backends("a")
    ca = CertAuthority(tmp_path / "pki")
    cert, key = ca.leaf("shop", [NAME])
    port, admin_port, tls_port = _free_port(), _free_port(), _free_port()
    config = tmp_path / "backends.json"
    doc = config_doc([("a", a.url, 1)], listen=f"127.0.0.1:{port}", admin=f"127.0.0.1:{admin_port}")
    doc["tls"] = {
        "listen": f"127.0.0.1:{tls_port}",
        "certificates": [{"cert": str(cert), "key": str(key)}],
    }
    write_config(config, doc)
    handoff, log = tmp_path / "proxy.sock", tmp_path / "proxy.log"
    procs = [_start(config, handoff, log)]
    await _wait_serving(f"http://127.0.0.1:{admin_port}")
    first = _listening_inodes(tls_port)
    assert len(first) == 1, first

    context = ssl.create_default_context(cafile=str(ca.pem))
    context.set_alpn_protocols(["http/1.1"])
    results = {"new": 0, "keep_alive": 0, "failed": 0}
    errors: list[str] = []
    stop = asyncio.Event()

    async def new_connections() -> None:
        for _ in range(5_000):  # bounded in count, and in time by ``stop``
            if stop.is_set():
                return
            try:  # POST: a dropped connection shows, nothing retries it
                ok = await _get(context, tls_port)
            except (OSError, ssl.SSLError, TimeoutError) as err:
                ok = False
                errors.append(repr(err))
            results["new" if ok else "failed"] += 1

    async def keep_alive() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=context, server_hostname=NAME
        )
        request = f"POST /x HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 2\r\n\r\nhi".encode()
        try:
            for _ in range(20_000):
                if stop.is_set():
                    return
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await asyncio.wait_for(reader.readexactly(length), 10)
                if not head.startswith(b"HTTP/1.1 200"):
                    results["failed"] += 1
                    errors.append(head[:40].decode(errors="replace"))
                    return
                results["keep_alive"] += 1
                if b"connection: close" in head.lower():  # the draining proxy says goodbye
                    writer.close()
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", tls_port, ssl=context, server_hostname=NAME
                    )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as err:
            results["failed"] += 1
            errors.append(repr(err))
        finally:
            writer.close()

    load = [asyncio.create_task(new_connections()) for _ in range(NEW_CONNECTION_CLIENTS)]
    load += [asyncio.create_task(keep_alive()) for _ in range(KEEP_ALIVE_CLIENTS)]
    try:
        for _ in range(RESTARTS):
            await asyncio.sleep(0.7)
            await _hand_over(procs, config, handoff, log)
            # one listening socket on the TLS port, the first process's
            assert _listening_inodes(tls_port) == first
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    assert results["failed"] == 0, (results, errors[:5])
    assert results["new"] > 20 and results["keep_alive"] > 20, results
    assert log.read_text().count("taken over by the new proxy") == RESTARTS


def test_the_tls_listener_goes_only_to_a_taker_that_asks(tmp_path: Path) -> None:
    """A taker that does not serve TLS (lbrec up's adoption, an older proxy) gets traffic and
    admin only: a TLS socket it held unserved would take its share of the port's connections
    and leave them hanging."""
    traffic, admin, tls = (socket.create_server(("127.0.0.1", 0)) for _ in range(3))
    path = tmp_path / "h.sock"

    def handed() -> list[tuple[str, int]]:
        return [("traffic", traffic.fileno()), ("admin", admin.fileno()), ("tls", tls.fileno())]

    try:
        for asks, roles in ((False, ("traffic", "admin")), (True, ("traffic", "admin", "tls"))):
            server = HandoffServer(path, handed, on_taken=lambda: None)
            server.start()
            try:
                taken = take_over(path, timeout=5, tls=asks)
                assert taken is not None and taken.roles == roles
                got = taken.role("tls")
                assert (got is not None) == asks
                if got is not None:
                    assert got.getsockname() == tls.getsockname()
                for sock in taken.sockets:
                    sock.close()
                taken.ready()
            finally:
                server.close()
    finally:
        for sock in (traffic, admin, tls):
            sock.close()


def test_a_proxy_from_before_hands_traffic_then_admin(tmp_path: Path) -> None:
    """A running proxy of the version before reads ``TAKE`` alone and sends its two sockets
    with no roles: the new taker reads them as traffic, then admin, and binds TLS itself."""
    traffic, admin = (socket.create_server(("127.0.0.1", 0)) for _ in range(2))
    path = tmp_path / "h.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def old_proxy() -> None:  # proxy/handoff.py's _serve as it was
        channel, _ = listener.accept()
        with channel:
            assert channel.recv(5) == b"TAKE\n"
            socket.send_fds(channel, [b"lbrec"], [traffic.fileno(), admin.fileno()])
            channel.recv(6)

    thread = threading.Thread(target=old_proxy)
    thread.start()
    try:
        taken = take_over(path, timeout=5, tls=True)
        assert taken is not None and taken.roles == ("traffic", "admin")
        assert taken.role("tls") is None
        got = taken.role("admin")
        assert got is not None and got.getsockname() == admin.getsockname()
        for sock in taken.sockets:
            sock.close()
        taken.ready()
    finally:
        thread.join(10)
        listener.close()
        traffic.close()
        admin.close()
