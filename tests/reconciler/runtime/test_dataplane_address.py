"""lbrec up moves a listener only when its address really changes."""

from __future__ import annotations

import socket

from lbrec.reconciler.runtime.proxy_sockets import same_address


def test_a_name_and_its_address_are_one_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert same_address(sock, f"127.0.0.1:{port}")
        assert same_address(sock, f"localhost:{port}")
        assert not same_address(sock, f"127.0.0.2:{port}")
        assert not same_address(sock, f"127.0.0.1:{port + 1 if port < 65535 else 1}")
