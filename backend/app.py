"""lbrec's demo backend: says which backend answered, serves /health. Standard library only."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ.get("BACKEND_NAME", socket.gethostname())
PORT = int(os.environ.get("PORT", "8000"))
HEALTH_PATH = os.environ.get("HEALTH_PATH", "/health")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lbrec-demo-backend"
    # Head and body go out as two writes: with Nagle's algorithm and the client's delayed ACK
    # every keep-alive answer after the first stalled 40 ms.
    disable_nagle_algorithm = True

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", NAME)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._send(200, b"ok\n")
        elif self.path.startswith("/json"):
            info = {"backend": NAME, "path": self.path, "headers": dict(self.headers)}
            self._send(200, json.dumps(info).encode(), "application/json")
        else:
            self._send(200, f"Hello from {NAME}\n".encode())

    do_HEAD = do_GET

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        self._send(200, f"{NAME} received {length} bytes\n".encode())

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: the proxy keeps the access log


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"backend {NAME} listening on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
