"""Does a reconciler pass move the proxy? p99 through `lbrec up` with and without passes.

One run makes a deploy folder of its own (the demo backend, two backends 2:3, a project name of
its own, ports below the ephemeral range), starts ``lbrec up`` (host mode: the proxy in its own
process, supervised) and waits until both backends answer. Then, in alternating phases of
``--phase`` seconds (``--rounds`` of each, interleaved so that a noisy neighbour hurts both
alike), a paced load of ``--rate`` requests/s over ``--connections`` keep-alive connections
(this script's own asyncio client, loopback only, bounded by the phase's length and
``--rate``) measures each answer's latency:

* ``quiet``  - no pass at all;
* ``passes`` - a pass every second: a no-op save of desired-state.yaml (the same bytes,
  written by rename as an editor does) and a real reweight (2:3 <-> 3:2) alternating.

It prints p50/p99 of each and the ratio p99(passes) / p99(quiet) (issue 26: within 1.1x).
The project is removed at the end (``lbrec up --down``); every process this script starts is
stopped by its pid.

    LBREC_BASE_IMAGE=lbrec-base:bookworm .venv/bin/python bench/pass_p99.py
    ... bench/pass_p99.py --python .venv-run/bin/python   # up from the wheel (quick start's)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    rng = random.Random(os.getpid())
    while len(ports) < count:
        port = rng.randint(20000, 30000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _spec(project: str, listen: int, admin: int, weights: tuple[int, int]) -> str:
    return (
        f"project: {project}\nlisten: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n"
        "proxy: {workers: 1}\n"
        "backends:\n"
        f"  - {{name: b1, port: 9001, weight: {weights[0]}}}\n"
        f"  - {{name: b2, port: 9002, weight: {weights[1]}}}\n"
    )


def _save(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _client(port: int, rate: float, seconds: float, conns: int) -> list[float]:
    """Paced keep-alive GETs; the latency of each answer, in seconds."""
    latencies: list[float] = []
    interval = conns / rate
    end = time.monotonic() + seconds

    async def one(offset: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        next_at = time.monotonic() + offset
        try:
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                started = time.monotonic()
                writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                latencies.append(time.monotonic() - started)
                next_at += interval
        finally:
            writer.close()

    await asyncio.gather(*(one(i * interval / conns) for i in range(conns)))
    return latencies


def _passes(spec: Path, text: dict[bool, str], stop: threading.Event) -> None:
    """Every second: a no-op save, then a reweight, alternating."""
    reweighted = False
    tick = 0
    while not stop.wait(1.0):
        tick += 1
        if tick % 2:
            _save(spec, text[reweighted])  # the same bytes: a pass that finds nothing to do
        else:
            reweighted = not reweighted
            _save(spec, text[reweighted])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the lbrec up to run")
    parser.add_argument("--phase", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    python = os.path.abspath(args.python)  # a venv's python: its link, not what it points to

    work = Path(tempfile.mkdtemp(prefix="lbrec-pass-bench-"))
    folder = work / "deploy"
    folder.mkdir()
    for name in ("Dockerfile.backend", ".dockerignore"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(REPO / "backend", folder / "backend", ignore=shutil.ignore_patterns("__py*"))
    project = f"lbrec-bench-{uuid.uuid4().hex[:6]}"
    listen, admin = _free_ports(2)
    text = {
        False: _spec(project, listen, admin, (2, 3)),
        True: _spec(project, listen, admin, (3, 2)),
    }
    spec = folder / "desired-state.yaml"
    spec.write_text(text[False])
    env = dict(os.environ, PYTHONPATH=str(REPO)) if args.python == sys.executable else None
    log = (work / "up.log").open("w")
    up = subprocess.Popen(
        [python, "-m", "lbrec", "up", "--down", "--resync", "0"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    results: dict[str, list[float]] = {"quiet": [], "passes": []}
    try:
        deadline = time.monotonic() + 300
        while True:
            if up.poll() is not None or time.monotonic() > deadline:
                print((work / "up.log").read_text()[-3000:], file=sys.stderr)
                return 1
            try:
                seen = asyncio.run(_client(listen, 50, 1.0, 2))
                if len(seen) > 20 and "pass=1 ok" in (work / "up.log").read_text():
                    break
            except OSError:
                pass
            time.sleep(1)
        asyncio.run(_client(listen, args.rate, 3.0, args.connections))  # warm-up
        for _ in range(args.rounds):
            for phase in ("quiet", "passes"):
                stop = threading.Event()
                saver = threading.Thread(target=_passes, args=(spec, text, stop))
                if phase == "passes":
                    saver.start()
                try:
                    got = asyncio.run(_client(listen, args.rate, args.phase, args.connections))
                finally:
                    stop.set()
                    if saver.is_alive():
                        saver.join()
                results[phase] += got
                time.sleep(2)  # the last pass ends before the next quiet phase
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                up.kill()
        log.close()
    up_log = (work / "up.log").read_text()
    passes = up_log.count(" ok in ")
    runtime = next((ln for ln in up_log.splitlines() if "listening on" in ln), "")
    print(runtime.split("INFO ", 1)[-1])
    print(
        f"rate {args.rate:g}/s over {args.connections} connections, "
        f"{args.rounds} x {args.phase:g}s each"
    )
    for phase, values in results.items():
        print(
            f"{phase:7s} {len(values):6d} answers  p50 {_pct(values, 0.5):6.2f} ms  "
            f"p99 {_pct(values, 0.99):6.2f} ms  mean {statistics.fmean(values) * 1000:6.2f} ms"
        )
    ratio = _pct(results["passes"], 0.99) / _pct(results["quiet"], 0.99)
    print(f"passes run: {passes}; p99 with passes / without: x{ratio:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
