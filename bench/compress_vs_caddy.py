"""Compression through the proxy, lbrec against Caddy's ``encode``, on the same page (issue 23).

One backend (aiohttp, in a process of its own) serves one HTML page of ``--kib`` KiB with a
Content-Length. lbrec (``lbrec proxy``, a route default ``compress`` with one coding) and
Caddy (``encode`` with the same coding, ``reverse_proxy`` to the same backend) serve it on
127.0.0.1; a client asks for it ``--requests`` times over ``--concurrency`` keep-alive
connections with ``Accept-Encoding`` set, and checks every body decodes to the page. What is
compared is the proxy's own CPU (user + system, from /proc) per request and per MiB of page,
and the bytes sent; ``identity`` is the same run without compression (the proxying alone).
Both proxies run one process; Caddy with GOMAXPROCS=1.

    .venv/bin/python bench/compress_vs_caddy.py [--kib 100] [--requests 2000]

Ports 21400-21403 on 127.0.0.1. Every process started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BACKEND, LBREC, CADDY, ADMIN = 21400, 21401, 21402, 21403
BACKEND_APP = """
import sys
from aiohttp import web
page = open(sys.argv[1], "rb").read()
async def serve(request):
    return web.Response(body=page, content_type="text/html")
async def health(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/{tail:.*}", serve)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""


def page(kib: int) -> bytes:
    """HTML made of the project's docs (real prose, as compressible as a real page)."""
    text = "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    body = ("<html><body><pre>" + text.replace("<", "&lt;")).encode()
    while len(body) < kib * 1024:
        body += body
    return body[: kib * 1024]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decode(body: bytes, coding: str | None) -> bytes:
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if coding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    return body


async def load(port: int, coding: str, requests: int, concurrency: int, expect: bytes) -> int:
    """The requests, every body checked; returns the bytes of the bodies as received."""
    sent = 0
    left = requests
    headers = {"Accept-Encoding": coding}
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:

        async def one() -> None:
            nonlocal sent, left
            while left > 0:
                left -= 1
                async with session.get(f"http://127.0.0.1:{port}/page", headers=headers) as r:
                    body = await r.read()
                    got = r.headers.get("Content-Encoding")
                    if decode(body, got) != expect or coding not in ("identity", got):
                        raise SystemExit(f"port {port}: a wrong body (encoding {got})")
                    sent += len(body)

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return sent


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"a process for port {port} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def start(argv: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or dict(os.environ)
    )
    try:
        wait_port(port, proc)
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kib", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--codings", default="identity,gzip,zstd")
    args = parser.parse_args()
    body = page(args.kib)
    work = Path(tempfile.mkdtemp(prefix="lbrec-compress-bench-"))
    (work / "page.html").write_bytes(body)
    procs: list[subprocess.Popen[bytes]] = []
    rows = []
    try:
        procs.append(
            start(
                [sys.executable, "-c", BACKEND_APP, str(work / "page.html"), str(BACKEND)], BACKEND
            )
        )
        for coding in args.codings.split(","):
            compress = None if coding == "identity" else {"codings": [coding], "with_cookies": True}
            doc = {
                "listen": f"127.0.0.1:{LBREC}",
                "admin": f"127.0.0.1:{ADMIN}",
                "health": {"interval": 60},
                "backends": [{"name": "web", "url": f"http://127.0.0.1:{BACKEND}", "weight": 1}],
            }
            if compress:
                doc["defaults"] = {"compress": compress}
            (work / "backends.json").write_text(json.dumps(doc))
            encode = "" if coding == "identity" else f"encode {coding}\n  "
            (work / "Caddyfile").write_text(
                "{\n  admin off\n  auto_https off\n}\n"
                f"http://127.0.0.1:{CADDY} {{\n  {encode}reverse_proxy 127.0.0.1:{BACKEND}\n}}\n"
            )
            caddy_env = {**os.environ, "GOMAXPROCS": "1", "HOME": str(work)}
            peers: list[tuple[str, int, subprocess.Popen[bytes]]] = []
            try:
                lbrec_argv = [str(ROOT / ".venv/bin/lbrec"), "proxy"]
                lbrec = start([*lbrec_argv, "--config", str(work / "backends.json")], LBREC)
                peers.append(("lbrec", LBREC, lbrec))
                if coding != "br":  # Debian's Caddy 2.6 encodes gzip and zstd only
                    caddy_argv = ["caddy", "run", "--config", str(work / "Caddyfile")]
                    caddy = start([*caddy_argv, "--adapter", "caddyfile"], CADDY, caddy_env)
                    peers.append(("caddy", CADDY, caddy))
                for name, port, proc in peers:
                    asyncio.run(load(port, coding, 100, args.concurrency, body))  # warm up
                    before = cpu_seconds(proc.pid)
                    sent = asyncio.run(load(port, coding, args.requests, args.concurrency, body))
                    cpu = cpu_seconds(proc.pid) - before
                    per_request_ms = cpu / args.requests * 1000
                    per_mib_ms = per_request_ms / (len(body) / 2**20)
                    ratio = sent / (len(body) * args.requests)
                    rows.append((coding, name, per_request_ms, per_mib_ms, ratio))
            finally:
                for _, _, proc in peers:
                    proc.terminate()
                    proc.wait(10)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    print(f"page {len(body) // 1024} KiB, {args.requests} requests x {args.concurrency} conns")
    print("| coding | proxy | CPU ms/request | CPU ms/MiB of page | bytes sent / page |")
    print("|---|---|---:|---:|---:|")
    for coding, name, per_request, per_mib, ratio in rows:
        print(f"| {coding} | {name} | {per_request:.3f} | {per_mib:.2f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
