"""New TLS connections per second: lbrec against nginx, HAProxy and Caddy, on loopback, in
one run, on the same certificate.

Each new connection is what a browser's first visit costs the front door: TCP connect, a TLS
handshake (SNI ``a.example``, ALPN ``http/1.1``, the certificate verified against the run's
CA), one ``GET /`` with ``Connection: close`` forwarded to a backend, the answer read to the
end. Two modes:

* ``full``: every connection a full handshake (a fresh client session each time);
* ``resumed``: every connection offers the session (TLS 1.3 ticket) the previous connection of
  the same client thread received, and counts whether the server took it (``session_reused``).

The client is this script (``--client``): ``--procs`` processes of ``--threads`` blocking
threads each, every thread a closed loop of new connections for ``--seconds`` (and at most
``--max`` connections), Python's ``ssl`` (OpenSSL) doing the TLS. Why not an off-the-shelf one:
``openssl s_time`` cannot send SNI (lbrec, as a front door with one certificate per site,
refuses a ClientHello without it, with an ``unrecognized_name`` alert), and ``h2load`` opens its
``-c`` connections once and never resumes a session. A Python client is slower than nginx, so
the connections per second of the C servers are partly the client's limit on this 2-core
machine; hence the second figure, which the client's speed does not bias: the **CPU seconds the
target's processes spent per 1,000 new connections** (from /proc, before and after). Both are
reported; ratios are against the peers in the same run.

Targets, one worker each, the same certificate and key (ECDSA P-256) and the same backends:

* ``lbrec``   - ``python -m proxy`` (``--wheel``: the mypyc-compiled wheel built from
  ``git archive HEAD``, as pip installs it) with ``tls.listen`` in backends.json: the real front
  door (proxy/frontdoor.py: the ClientHello read, SNI picks the certificate, Mozilla's
  intermediate profile);
* ``nginx``, ``haproxy``, ``caddy`` - as bench/h2_bench.py starts them (each's default session
  tickets; nginx without ``ssl_session_cache``, HAProxy with its default cache).

``--idle N``: the RSS of each target with N idle TLS connections held open (each after one
HTTP/1.1 request), a fresh process for it (bench/h2_bench.py measure_idle).

Runs are bounded in count and time; the load average is recorded before and after.

    .venv/bin/python bench/tls_handshake_bench.py                  # ~1.5 minutes
    .venv/bin/python bench/tls_handshake_bench.py --wheel --idle 2000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import proxy_bench  # noqa: E402
from bench.h2_bench import (  # noqa: E402
    NAME,
    https_ready,
    measure_idle,
    start_target,
)
from bench.proxy_bench import (  # noqa: E402
    LOOPBACK,
    Backend,
    BenchError,
    Processes,
    backends_nginx_conf,
    free_port,
    machine_info,
    wait_ready,
)

TARGETS = ("lbrec", "nginx", "haproxy", "caddy")
MODES = ("full", "resumed")
REQUEST = f"GET / HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode()


# --------------------------------------------------------------------------- the client


def _read_answer(tls: ssl.SSLSocket) -> bytes:
    """The head and the Content-Length body of one answer (not up to the server's close: how
    soon a server closes after ``Connection: close`` is not what is measured)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


def _one(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bool, bool, ssl.SSLSession | None]:
    """One new connection: (answered 200, session reused, the session to offer next).
    TCP_NODELAY as browsers set it: else the request, written right after the client's
    Finished, waits for the server's delayed ACK (40 ms) with a server that sends nothing
    between the two (Caddy), which measures Nagle's algorithm, not the server."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=NAME, session=session) as tls:
            tls.sendall(REQUEST)
            head = _read_answer(tls)
            return head.startswith(b"HTTP/1.1 200"), bool(tls.session_reused), tls.session


def client(port: int, ca: str, mode: str, *, seconds: float, most: int, threads: int) -> None:
    """``--client``: ``threads`` closed loops of new connections; prints one JSON line."""
    counts = {"connections": 0, "failed": 0, "reused": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    errors: list[str] = []

    def loop() -> None:
        context = ssl.create_default_context(cafile=ca)
        context.set_alpn_protocols(["http/1.1"])
        session: ssl.SSLSession | None = None
        while time.monotonic() < deadline:
            with lock:
                if counts["connections"] + counts["failed"] >= most:
                    return
            try:
                ok, reused, got = _one(port, context, session if mode == "resumed" else None)
            except (OSError, ssl.SSLError) as err:
                ok, reused, got = False, False, None
                if len(errors) < 3:
                    errors.append(f"{type(err).__name__}: {err}")
            with lock:
                counts["connections" if ok else "failed"] += 1
                counts["reused"] += int(ok and reused)
            if mode == "resumed" and got is not None:
                session = got

    started = time.monotonic()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({**counts, "seconds": time.monotonic() - started, "errors": errors}))


def run_clients(
    port: int, ca: Path, mode: str, *, procs: int, threads: int, seconds: float, most: int
) -> dict[str, Any]:
    """``procs`` client processes at once; their counts summed, the rate over the longest."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--client", str(port), "--ca", str(ca)]
    argv += ["--mode", mode, "--seconds", str(seconds), "--threads", str(threads)]
    argv += ["--max", str(max(1, most // procs))]
    running = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    total: dict[str, Any] = {"connections": 0, "failed": 0, "reused": 0, "errors": []}
    longest = 0.0
    for proc in running:
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0 or not out.strip():
            raise BenchError(f"client exited {proc.returncode}: {err.strip()[-400:]}")
        doc = json.loads(out.strip().splitlines()[-1])
        for key in ("connections", "failed", "reused"):
            total[key] += int(doc[key])
        total["errors"] += doc["errors"]
        longest = max(longest, float(doc["seconds"]))
    total["seconds"] = longest
    total["rate"] = total["connections"] / longest if longest else 0.0
    return total


# --------------------------------------------------------------------------- lbrec, served


def lbrec_config(
    tmp: Path, port: int, admin: int, backends: list[Backend], *, cert: Path, key: Path
) -> Path:
    """backends.json with ``tls.listen`` (the plain listener beside it, unused), built with the
    proxy's own model."""
    from lbrec.proxy.config import BackendsConfig

    config = BackendsConfig.model_validate(
        {
            "listen": f"{LOOPBACK}:{free_port()}",
            "admin": f"{LOOPBACK}:{admin}",
            "health": {"interval": 60.0, "timeout": 2.0},
            "backends": [
                {"name": b.name, "url": f"http://{LOOPBACK}:{b.port}", "weight": 1}
                for b in backends
            ],
            "tls": {
                "listen": f"{LOOPBACK}:{port}",
                "certificates": [{"cert": str(cert), "key": str(key)}],
                "redirect_http": False,
            },
        }
    )
    path = tmp / "lbrec" / "backends.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.model_dump_json(exclude_none=True, exclude_unset=True))
    return path


def start_lbrec(  # noqa: PLR0917  as h2_bench.start_target
    procs: Processes,
    tmp: Path,
    backends: list[Backend],
    cert: Path,
    key: Path,
    ca: Path,
    site: Path | None,
) -> tuple[int, subprocess.Popen[bytes]]:
    port, admin = free_port(), free_port()
    config = lbrec_config(tmp, port, admin, backends, cert=cert, key=key)
    python = REPO / ".venv" / "bin" / "python"
    argv = [str(python if python.exists() else Path(sys.executable))]
    argv += ["-P", "-m", "lbrec.proxy"] if site is not None else ["-m", "proxy"]
    argv += ["--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(site)} if site is not None else None
    proc = procs.start("lbrec", argv, cwd=tmp if site is not None else REPO, env=env)
    https_ready(procs, proc, "lbrec", port, ca)
    return port, proc


def build_head_wheel(tmp: Path) -> Path:
    """The wheel of the last commit (``git archive HEAD``: not the working tree, which other
    work may be changing), installed with ``--target``; the folder to put on the path."""
    source = tmp / "head"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "HEAD"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True, timeout=120)
    return proxy_bench.build_wheel(source, tmp / "wheel")


def runtime_of(site: Path | None) -> str:
    """Where lbrec ran from, and whether its request path is compiled (mypyc's modules)."""
    if site is None:
        return "the checkout, interpreted"
    compiled = sorted(p.name for p in (site / "lbrec" / "proxy").glob("*.so"))
    return f"its wheel (git archive HEAD), {len(compiled)} modules of lbrec/proxy compiled"


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    name: str
    rate: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    reused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))
    done: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))
    failed: int = 0
    idle: tuple[int, int] | None = None
    errors: list[str] = field(default_factory=list)


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(TARGETS))
    parser.add_argument("--seconds", type=float, default=4.0, help="each measured run")
    parser.add_argument("--max", type=int, default=40000, help="connections, each run at most")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per client process")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs, interleaved")
    parser.add_argument("--idle", type=int, default=0, help="RSS with this many idle TLS conns")
    parser.add_argument("--wheel", action="store_true", help="lbrec from its compiled wheel")
    parser.add_argument(
        "--site", type=Path, help="lbrec from this folder (a wheel installed with --target)"
    )
    parser.add_argument("--ports", default="23000-23999", help="LOW-HIGH for every listener")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="full", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client(
            args.client,
            args.ca,
            args.mode,
            seconds=args.seconds,
            most=args.max,
            threads=args.threads,
        )
        return 0
    low, _, high = args.ports.partition("-")
    proxy_bench.PORT_RANGE = (int(low), int(high))
    names = [n for n in args.only.split(",") if n]
    from shutil import which

    names = [n for n in names if n == "lbrec" or which(n) is not None]
    from tests.support.certs import CertAuthority

    load_before = _loadavg()
    results = {n: Result(n) for n in names}
    with tempfile.TemporaryDirectory(prefix="lbrec-tlsbench-") as scratch:
        tmp = Path(scratch)
        procs = Processes(tmp)
        site = args.site or (build_head_wheel(tmp) if args.wheel else None)
        runtime = runtime_of(site)
        try:
            ca = CertAuthority(tmp / "pki")
            cert, key = ca.leaf("site", [NAME])
            backends = [Backend("b1", free_port(), 1), Backend("b2", free_port(), 1)]
            conf = tmp / "backends.conf"
            conf.write_text(backends_nginx_conf(tmp, backends))
            back = procs.start(
                "backends",
                [
                    *("nginx", "-p", str(tmp), "-e", str(tmp / "backends-error.log")),
                    *("-c", str(conf), "-g", "daemon off;"),
                ],
            )
            for b in backends:
                wait_ready(procs, back, "backends", b.port, timeout=10)

            def start(name: str) -> tuple[int, subprocess.Popen[bytes]]:
                if name == "lbrec":
                    return start_lbrec(procs, tmp, backends, cert, key, ca.pem, site)
                return start_target(name, procs, tmp, backends, cert, key, ca.pem)

            ports: dict[str, int] = {}
            for name in names:
                try:
                    ports[name], _proc = start(name)
                except BenchError as err:
                    results[name].errors.append(str(err))
            live = [n for n in names if n in ports]
            shape = {"procs": args.procs, "threads": args.threads}
            for name in live:  # warm-up: 1 s of each mode
                for mode in MODES:
                    run_clients(ports[name], ca.pem, mode, seconds=1.0, most=5000, **shape)
            for _round in range(args.rounds):
                for mode in MODES:
                    for name in live:
                        before = sum(procs.cpu_seconds(name))
                        got = run_clients(
                            ports[name], ca.pem, mode, seconds=args.seconds, most=args.max, **shape
                        )
                        cpu = sum(procs.cpu_seconds(name)) - before
                        res = results[name]
                        res.rate[mode].append(got["rate"])
                        if got["connections"]:
                            res.cpu_ms[mode].append(1000 * cpu / got["connections"])
                        res.reused[mode] += got["reused"]
                        res.done[mode] += got["connections"]
                        res.failed += got["failed"]
                        res.errors += got["errors"][:2]
            for name in live if args.idle else []:
                port, proc = start(name)  # a fresh process: memory freed is not given back
                try:
                    results[name].idle = measure_idle(port, proc.pid, ca.pem, args.idle, h2=False)
                except (OSError, TimeoutError, BenchError) as err:
                    results[name].errors.append(f"idle: {err}")
                finally:
                    procs.stop(proc)
        finally:
            procs.stop_all()
    load_after = _loadavg()
    info = machine_info()
    print(
        f"new TLS connections, {args.procs} client processes x {args.threads} threads "
        f"(closed loops), {args.seconds:g} s a run, {args.rounds} rounds interleaved; "
        f"lbrec: {runtime}; {info['cpu_model']}, {info['usable_cpus']} CPUs; "
        f"{info['nginx']}; {info['haproxy']}; caddy {info['caddy']}; "
        f"load average before {' '.join(load_before)}, after {' '.join(load_after)}"
    )
    print()
    print(
        "| target | full: conn/s | CPU ms / conn | resumed: conn/s | CPU ms / conn "
        "| resumed share | failed |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        res = results[name]
        if not res.rate["full"]:
            print(f"| {name} | - | - | - | - | - | {'; '.join(res.errors)[:80] or '-'} |")
            continue
        cells = []
        for mode in MODES:
            cells.append(f"{statistics.median(res.rate[mode]):,.0f}")
            cells.append(f"{statistics.median(res.cpu_ms[mode]):.3f}")
        share = res.reused["resumed"] / res.done["resumed"] if res.done["resumed"] else 0.0
        print(f"| {name} | {' | '.join(cells)} | {share:.0%} | {res.failed} |")
    if "lbrec" in results and results["lbrec"].rate["full"]:
        print()
        mine = results["lbrec"]
        for name in names:
            peer = results[name]
            if name == "lbrec" or not peer.rate["full"]:
                continue
            parts = []
            for mode in MODES:
                rate = statistics.median(mine.rate[mode]) / statistics.median(peer.rate[mode])
                cpu = statistics.median(peer.cpu_ms[mode]) / statistics.median(mine.cpu_ms[mode])
                parts.append(f"{mode}: x{rate:.2f} conn/s, x{cpu:.2f} connections per CPU second")
            print(f"lbrec against {name}: {'; '.join(parts)}")
    if args.idle:
        print()
        print(f"RSS with {args.idle:,} idle TLS connections (HTTP/1.1, one request each):")
        print()
        print("| target | before MiB | with MiB | per connection |")
        print("| --- | ---: | ---: | ---: |")
        for name in names:
            idle = results[name].idle
            if idle is None:
                print(f"| {name} | - | - | - |")
                continue
            before, with_ = idle
            print(
                f"| {name} | {before / 1024:.1f} | {with_ / 1024:.1f} "
                f"| {(with_ - before) / args.idle:.1f} KiB |"
            )
    for name in names:
        for error in dict.fromkeys(results[name].errors):
            print(f"{name}: {error}", file=sys.stderr)
    if args.json:
        doc = {
            "machine": info,
            "load_before": load_before,
            "load_after": load_after,
            "results": {n: r.__dict__ for n, r in results.items()},
        }
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
