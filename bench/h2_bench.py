"""HTTP/2 over TLS: lbrec against nginx, HAProxy and Caddy, on loopback, with h2load.

One run makes a test CA and a certificate for ``a.example`` (tests/support/certs.py), starts
two backends (one nginx serving ``return 200 "ok"`` on two ports, as bench/proxy_bench.py
does), then for each target a TLS listener offering ``h2`` that forwards over HTTP/1.1 with
keep-alive to both backends:

* ``lbrec``   - ProxyServer with proxy/http2's Http2Connection behind proxy/tls_transport's
  TlsConnection, on uvloop, in a process of its own (``--serve-lbrec``, below);
* ``nginx``   - one worker, ``listen ... ssl http2``, upstream keepalive 64;
* ``haproxy`` - nbthread 1, ``bind ... ssl crt ... alpn h2,http/1.1``, http-reuse always;
* ``caddy``   - ``reverse_proxy`` to both, GOMAXPROCS=1, admin and automatic HTTPS off.

Each is loaded by ``h2load -n N -c C -m M -t 1`` (``--connect-to`` 127.0.0.1: SNI and
:authority are ``a.example``); one warm-up, then ``--rounds`` measured runs interleaved across
the targets. Reported: the median requests/s, p50 and p99 of the request times (h2load's
``--log-file``), the CPU seconds per 1,000 requests of the target's processes, and the
requests that failed or got a status >= 400, summed over the rounds. Every process runs in its
own session and is stopped by its process group; all traffic is on 127.0.0.1.

    .venv/bin/python bench/h2_bench.py                      # ~1 minute
    .venv/bin/python bench/h2_bench.py --only lbrec,nginx -n 20000 -c 8 -m 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.proxy_bench import (  # noqa: E402
    LOOPBACK,
    Backend,
    BenchError,
    Processes,
    backends_nginx_conf,
    free_port,
    machine_info,
    nginx_temp_paths,
    wait_ready,
)

NAME = "a.example"
TARGETS = ("lbrec", "nginx", "haproxy", "caddy")


@dataclass
class Result:
    name: str
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_per_k: list[float] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    idle: dict[str, tuple[int, int]] = field(default_factory=dict)  # RSS KiB before, with


# --------------------------------------------------------------------------- the targets


def nginx_conf(tmp: Path, port: int, backends: list[Backend], cert: Path, key: Path) -> str:
    servers = "\n".join(f"        server {LOOPBACK}:{b.port};" for b in backends)
    return f"""worker_processes 1;
error_log {tmp}/nginx-error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{nginx_temp_paths(tmp / "nginx-temp")}    keepalive_requests 1000000;
    http2_max_requests 1000000;
    upstream pool {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {LOOPBACK}:{port} ssl http2 backlog=4096;
        server_name {NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_conf(port: int, backends: list[Backend], pem: Path) -> str:
    servers = "\n".join(f"    server {b.name} {LOOPBACK}:{b.port}" for b in backends)
    return f"""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 65s

frontend fe
    bind {LOOPBACK}:{port} ssl crt {pem} alpn h2,http/1.1
    default_backend pool

backend pool
    balance roundrobin
    http-reuse always
{servers}
"""


def caddyfile(port: int, backends: list[Backend], cert: Path, key: Path) -> str:
    upstreams = " ".join(f"{LOOPBACK}:{b.port}" for b in backends)
    return f"""{{
    admin off
    auto_https off
}}
https://{NAME}:{port} {{
    bind {LOOPBACK}
    tls {cert} {key}
    reverse_proxy {upstreams}
}}
"""


def https_ready(
    procs: Processes,
    proc: subprocess.Popen[bytes],
    name: str,
    port: int,
    ca: Path,
    *,
    timeout: float = 15.0,
) -> None:
    """Until an HTTPS GET (SNI a.example) answers 200."""
    import http.client

    deadline = time.monotonic() + timeout
    context = ssl.create_default_context(cafile=str(ca))
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited: {procs.log_tail(name)}")
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=1.0, context=context)
        conn._tunnel_host = None  # type: ignore[attr-defined]
        try:
            sock = context.wrap_socket(
                __import__("socket").create_connection((LOOPBACK, port), 1.0),
                server_hostname=NAME,
            )
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
            data = sock.recv(100)
            sock.close()
            if data.startswith(b"HTTP/1.1 200"):
                return
            last = data[:40].decode(errors="replace")
        except OSError as err:
            last = str(err)
        time.sleep(0.2)
    raise BenchError(f"{name} not ready ({last}): {procs.log_tail(name)}")


def start_target(  # noqa: PLR0917
    name: str, procs: Processes, tmp: Path, backends: list[Backend], cert: Path, key: Path, ca: Path
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    if name == "lbrec":
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-lbrec",
            str(port),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ]
        for b in backends:
            argv += ["--backend", str(b.port)]
        proc = procs.start(name, argv, cwd=REPO)
    elif name == "nginx":
        (tmp / "nginx-temp").mkdir(exist_ok=True)
        conf = tmp / "nginx-h2.conf"
        conf.write_text(nginx_conf(tmp, port, backends, cert, key))
        proc = procs.start(
            name,
            [
                "nginx",
                "-p",
                str(tmp),
                "-e",
                str(tmp / "nginx-error.log"),
                "-c",
                str(conf),
                "-g",
                "daemon off;",
            ],
        )
    elif name == "haproxy":
        pem = tmp / "haproxy.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        conf = tmp / "haproxy-h2.cfg"
        conf.write_text(haproxy_conf(port, backends, pem))
        proc = procs.start(name, ["haproxy", "-f", str(conf), "-db"])
    elif name == "caddy":
        conf = tmp / "Caddyfile"
        conf.write_text(caddyfile(port, backends, cert, key))
        env = {
            **os.environ,
            "GOMAXPROCS": "1",
            "XDG_DATA_HOME": str(tmp / "caddy-data"),
            "XDG_CONFIG_HOME": str(tmp / "caddy-config"),
        }
        proc = procs.start(
            name, ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"], env=env
        )
    else:
        raise BenchError(f"unknown target {name}")
    https_ready(procs, proc, name, port, ca)
    return port, proc


# --------------------------------------------------------------------------- lbrec, served


def serve_lbrec(port: int, cert: str, key: str, backend_ports: list[int]) -> None:
    """The lbrec target: a ProxyServer and a TLS listener whose h2 connections are
    proxy/http2's (http/1.1: ClientConnection), on uvloop, until SIGTERM."""
    from lbrec.proxy.config import BackendsConfig
    from lbrec.proxy.downstream import ClientConnection
    from lbrec.proxy.http2.connection import Http2Connection
    from lbrec.proxy.server import ProxyServer, listening_socket
    from lbrec.proxy.tls_transport import ClientHello, TlsConnection

    async def main() -> None:
        config = BackendsConfig.model_validate(
            {
                "listen": f"{LOOPBACK}:0",
                "health": {"interval": 30},
                "backends": [
                    {"name": f"b{i}", "url": f"http://{LOOPBACK}:{p}", "weight": 1}
                    for i, p in enumerate(backend_ports)
                ],
            }
        )
        server = ProxyServer(config)
        await server.start(listening_socket(LOOPBACK, 0))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["h2", "http/1.1"])

        def app(alpn: str | None) -> asyncio.Protocol:
            return Http2Connection(server) if alpn == "h2" else ClientConnection(server)

        loop = asyncio.get_running_loop()
        await loop.create_server(
            lambda: TlsConnection(lambda _hello: context, app), LOOPBACK, port, backlog=4096
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()  # then return: a profiler around this process writes its data

    _ = ClientHello
    import uvloop

    uvloop.run(main())


# --------------------------------------------------------------------------- h2load


def run_h2load(
    port: int,
    log: Path,
    *,
    requests: int,
    clients: int,
    streams: int,
    timeout: float,
    h1: bool = False,
) -> tuple[float, float, float, int, str]:
    """(req/s, p50 ms, p99 ms, failed, raw output) of one h2load run."""
    log.unlink(missing_ok=True)
    argv = [
        "h2load",
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-m",
        str(streams),
        "-t",
        "1",
        f"--connect-to={LOOPBACK}:{port}",
        "--log-file",
        str(log),
        f"https://{NAME}/",
    ]
    if h1:  # the same concurrency as HTTP/1.1 keep-alive connections, one request at a time
        argv[3:7] = ["-c", str(clients * streams), "-m", "1"]
        argv.insert(1, "--h1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    out = done.stdout + done.stderr
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    counts = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if rate is None or counts is None or codes is None:
        raise BenchError(f"h2load: {out[-400:]}")
    times = sorted(
        int(line.split("\t")[2]) / 1000
        for line in log.read_text().splitlines()
        if line.count("\t") >= 2
    )
    failed = int(counts.group(2)) + int(codes.group(3)) + int(codes.group(4))
    failed += requests - int(counts.group(1))
    p50 = times[len(times) // 2] if times else 0.0
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0.0
    return float(rate.group(1)), p50, p99, failed, out


def group_rss_kib(pgid: int) -> int:
    """The resident memory of every process in the group ``pgid`` (KiB)."""
    from bench.proxy_bench import _proc_stats

    total = 0
    for pid, fields in _proc_stats():
        if int(fields[2]) != pgid:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def hold_idle(port: int, ca: Path, count: int, *, h2: bool) -> list[asyncio.StreamWriter]:
    """``count`` TLS connections (SNI a.example), each with the HTTP/2 preface and SETTINGS
    sent and the server's read (``h2``), or one HTTP/1.1 request answered; then left idle."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"] if h2 else ["http/1.1"])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + bytes([4, 0]) + bytes(4)
    request = f"GET / HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()
    held: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, port, ssl=context, server_hostname=NAME), 20
            )
            writer.write(preface if h2 else request)
            await writer.drain()
            await asyncio.wait_for(reader.read(4096), 20)
            held.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return held


def measure_idle(port: int, pgid: int, ca: Path, count: int, *, h2: bool) -> tuple[int, int]:
    """RSS of the target (KiB) before and with ``count`` idle connections held open."""

    async def run() -> tuple[int, int]:
        before = group_rss_kib(pgid)
        held = await hold_idle(port, ca, count, h2=h2)
        await asyncio.sleep(1.0)
        after = group_rss_kib(pgid)
        for writer in held:
            writer.transport.abort()
        return before, after

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(TARGETS))
    parser.add_argument("-n", "--requests", type=int, default=20000)
    parser.add_argument("-c", "--clients", type=int, default=8)
    parser.add_argument("-m", "--streams", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--idle",
        type=int,
        default=0,
        help="also: the RSS of each target with this many idle TLS connections (h2 and h1)",
    )
    parser.add_argument(
        "--h1",
        action="store_true",
        help="HTTP/1.1 over the same TLS listeners (h2load --h1, clients x streams connections)",
    )
    parser.add_argument("--serve-lbrec", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--backend", type=int, action="append", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_lbrec:
        serve_lbrec(args.serve_lbrec, args.cert, args.key, args.backend)
        return 0
    if shutil.which("h2load") is None:
        print("h2load is missing: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n]
    missing = [n for n in names if n != "lbrec" and shutil.which(n) is None]
    names = [n for n in names if n not in missing]
    from tests.support.certs import CertAuthority

    with tempfile.TemporaryDirectory(prefix="lbrec-h2bench-") as scratch:
        tmp = Path(scratch)
        procs = Processes(tmp)
        try:
            ca = CertAuthority(tmp / "pki")
            cert, key = ca.leaf("site", [NAME])
            backends = [Backend("b1", free_port(), 1), Backend("b2", free_port(), 1)]
            conf = tmp / "backends.conf"
            conf.write_text(backends_nginx_conf(tmp, backends))
            back = procs.start(
                "backends",
                [
                    "nginx",
                    "-p",
                    str(tmp),
                    "-e",
                    str(tmp / "backends-error.log"),
                    "-c",
                    str(conf),
                    "-g",
                    "daemon off;",
                ],
            )
            for b in backends:
                wait_ready(procs, back, "backends", b.port, timeout=10)
            ports: dict[str, int] = {}
            results = {n: Result(n) for n in names}
            for name in names:
                try:
                    ports[name], proc = start_target(name, procs, tmp, backends, cert, key, ca.pem)
                except BenchError as err:
                    results[name].errors.append(str(err))
            live = [n for n in names if n in ports]
            shape: dict[str, Any] = {
                "requests": args.requests,
                "clients": args.clients,
                "streams": args.streams,
                "timeout": 300.0,
                "h1": args.h1,
            }
            for name in live:  # warm-up
                run_h2load(ports[name], tmp / "warm.log", **{**shape, "requests": 2000})
            for _round in range(args.rounds):
                for name in live:
                    before = sum(procs.cpu_seconds(name))
                    rps, p50, p99, failed, _out = run_h2load(ports[name], tmp / "run.log", **shape)
                    cpu = sum(procs.cpu_seconds(name)) - before
                    res = results[name]
                    res.rps.append(rps)
                    res.p50.append(p50)
                    res.p99.append(p99)
                    res.cpu_per_k.append(1000 * cpu / args.requests)
                    res.failed += failed
            for name in live if args.idle else []:
                for h2, label in ((True, "h2"), (False, "h1")):
                    # a fresh process for each: memory a process freed is not given back
                    port, proc = start_target(name, procs, tmp, backends, cert, key, ca.pem)
                    try:
                        run_h2load(port, tmp / "warm.log", **{**shape, "requests": 2000})
                        results[name].idle[label] = measure_idle(
                            port, proc.pid, ca.pem, args.idle, h2=h2
                        )
                    except (OSError, TimeoutError, BenchError) as err:
                        results[name].errors.append(f"idle {label}: {err}")
                    finally:
                        procs.stop(proc)
        finally:
            procs.stop_all()
    info = machine_info()
    info["h2load"] = subprocess.run(
        ["h2load", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    info["caddy"] = (
        subprocess.run(
            ["caddy", "version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if shutil.which("caddy")
        else "not installed"
    )
    print(
        f"h2load{' --h1' if args.h1 else ''} -n {args.requests} -c {args.clients} "
        f"-m {args.streams} -t 1, "
        f"{args.rounds} rounds; {info['cpu_model']}, {info['usable_cpus']} CPUs; "
        f"{info['nginx']}; {info['haproxy']}; caddy {info['caddy']}; {info['h2load']}"
    )
    print()
    print("| target | req/s (median) | p50 ms | p99 ms | CPU s / 1k req | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        res = results[name]
        if not res.rps:
            why = "; ".join(res.errors) or "not installed"
            print(f"| {name} | - | - | - | - | {why[:80]} |")
            continue
        print(
            f"| {name} | {statistics.median(res.rps):,.0f} | {statistics.median(res.p50):.2f} "
            f"| {statistics.median(res.p99):.2f} | {statistics.median(res.cpu_per_k):.3f} "
            f"| {res.failed} |"
        )
    if args.idle:
        print()
        print(
            f"RSS with {args.idle:,} idle TLS connections held open (MiB; a fresh process for "
            "each protocol, after 2,000 requests):"
        )
        print()
        print(
            "| target | h2: before | with | per connection | h1: before | with | per connection |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in names:
            idle = results[name].idle
            if "h2" not in idle or "h1" not in idle:
                print(f"| {name} | - | - | - | - | - | - |")
                continue
            (b2, a2), (b1, a1) = idle["h2"], idle["h1"]
            print(
                f"| {name} | {b2 / 1024:.1f} | {a2 / 1024:.1f} | {(a2 - b2) / args.idle:.1f} KiB "
                f"| {b1 / 1024:.1f} | {a1 / 1024:.1f} | {(a1 - b1) / args.idle:.1f} KiB |"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "results": {n: r.__dict__ for n, r in results.items()}}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
