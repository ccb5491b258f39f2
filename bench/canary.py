"""A bad canary under load: how many client requests fail before lbrec rolls it back.

    LBREC_BASE_IMAGE=lbrec-base:bookworm python bench/canary.py --first 1 5 25

For each first step P, in ONE run: a project of its own with one backend ``web`` (an app image
built here, 2 replicas, ``rollout: {strategy: canary, steps: [P, 50, 100], interval: 5s, ...,
analysis: {max_error_rate: 0.01, min_requests: 20}}``) deployed with ``lbrec apply``, our own
proxy (``python -m proxy``) on the pool it wrote, and a bounded load (keep-alive clients on
127.0.0.1, every non-2xx answer and every socket error counted as failed). Then the backend's
env changes to ``FAIL_EVERY: '3'`` (a bad version: every third answer to / is a 500) and
``lbrec apply`` is timed; it must exit 1 with ``canary rolled back at step P%``. The load stops
1 s later.

Prints, per first step: requests, failed requests, their share, the apply's wall time, and the
share one would expect while the canary is judged (P % x 1/3; the row's share is lower, as its
requests also cover the new version's start and the time after the rollback).
Every project, container, image and process it makes is its own (unique project names, by id
and pid); traffic goes to loopback only; every load loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("LBREC_BASE_IMAGE", "lbrec-base:bookworm")
FAIL_EVERY = 3
MAX_REQUESTS = 2_000_000
MAX_SECONDS = 600.0

# The app the rollout tests use (tests/integration/test_rollout.py), trimmed to what this needs:
# FAIL_EVERY=N makes every Nth answer to / a 500.
_APP = r"""
import os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "v0")
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))  # every Nth answer to / is a 500
SERVED = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global SERVED
        if self.path == "/health":
            self._send(200, b"health\n")
            return
        SERVED += 1
        if FAIL_EVERY and SERVED % FAIL_EVERY == 0:
            self._send(500, b"broken\n")
            return
        self._send(200, f"{VERSION}\n".encode())

    def log_message(self, format, *args):
        return


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler)
    server.daemon_threads = True
    print(f"app {VERSION} listening", flush=True)
    server.serve_forever()


main()
"""

_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV VERSION=v1 PYTHONUNBUFFERED=1
COPY app.py /app.py
STOPSIGNAL SIGTERM
CMD ["python3", "/app.py"]
"""

_WEB = (
    "{{name: web, port: 8000, image: {image}, replicas: 2, health: {{path: /health}},"
    " env: {env}, rollout: {{strategy: canary, steps: [{first}, 50, 100], interval: 5s,"
    " min_healthy_time: 0.5s, healthy_deadline: 30s, drain_timeout: 5s,"
    " analysis: {{max_error_rate: 0.01, min_requests: 20}}}}}}"
)


def _free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now (all bound at once, then released)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Load:
    """A few threads, each on one keep-alive connection to 127.0.0.1:port, bounded by a total
    request count and a deadline. Every non-2xx answer and every socket error is a failure."""

    port: int
    threads: int = 4
    ok: int = 0
    failed: int = 0  # non-2xx answers
    errors: int = 0  # socket errors, no answer
    samples: Counter[str] = field(default_factory=Counter)
    _sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.errors

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= MAX_REQUESTS:
                return False
            self._sent += 1
            return True

    def _run(self, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self._take():
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as err:
                    with self._lock:
                        self.errors += 1
                        self.samples[type(err).__name__] += 1
                    conn.close()
                    conn = None
                    continue
                with self._lock:
                    if 200 <= response.status < 300:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.samples[str(response.status)] += 1
                if response.will_close:
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def start(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(deadline,), name=f"load-{n}")
            worker.daemon = True
            worker.start()
            self._workers.append(worker)
        until = time.monotonic() + 30
        while self.total < 20 and time.monotonic() < until:
            time.sleep(0.05)
        if self.total < 20:
            raise SystemExit("the load did not get going within 30 s")

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def _must(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _build(context: Path, image: str, env: dict[str, str]) -> None:
    context.mkdir()
    (context / "Dockerfile").write_text(_DOCKERFILE)
    (context / "app.py").write_text(_APP)
    cmd = ["docker", "build", "-q", "-t", image, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "."]
    _must(_run(cmd, context, env, timeout=300), f"docker build {image}")


def _spec(project: str, listen: int, admin: int, image: str, *, first: int, env: str) -> str:
    lines = [
        f"project: {project}",
        f"listen: 127.0.0.1:{listen}",
        f"admin: 127.0.0.1:{admin}",
        "health: {interval: 0.5, timeout: 1.0, rise: 1, fall: 2}",
        "backends:",
        "  - " + _WEB.format(image=image, env=env, first=first),
    ]
    return "\n".join(lines) + "\n"


def _proxy(folder: Path, env: dict[str, str], listen: int, admin: int) -> subprocess.Popen[bytes]:
    """Our own proxy on the pool the first apply wrote; returns once it routes to every
    instance and answers on the listener. The caller stops it by pid."""
    with open(folder / "proxy.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(folder / "config/backends.json")],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/-/pool", timeout=1) as r:
                    doc = json.loads(r.read())
                up = doc["backends"] and all(b["state"] == "up" for b in doc["backends"])
                if up:
                    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=2) as r:
                        if r.status == 200:
                            return proc
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
    except BaseException:
        _stop(proc)
        raise
    _stop(proc)
    tail = (folder / "proxy.log").read_text(errors="replace")[-2000:]
    raise SystemExit(f"the proxy did not come up\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # our own child, by pid
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _cleanup(project: str, images: list[str]) -> None:
    """This project's containers (by its labels, removed by id), network and images."""
    ids: set[str] = set()
    for label in (f"lbrec.project={project}", f"com.docker.compose.project={project}"):
        ids.update(
            subprocess.run(
                ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={label}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
        )
    if ids:
        subprocess.run(["docker", "rm", "-f", *sorted(ids)], capture_output=True, check=False)
    subprocess.run(
        ["docker", "network", "rm", f"{project}_default"], capture_output=True, check=False
    )
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)


@dataclass
class Row:
    first: int
    requests: int
    failed: int
    errors: int
    seconds: float
    exit_code: int
    rolled_back_at: str
    samples: dict[str, int]

    @property
    def failures(self) -> int:
        return self.failed + self.errors

    @property
    def share(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def expected(self) -> float:
        return self.first / 100 / FAIL_EVERY

    @property
    def as_expected(self) -> bool:
        return self.exit_code == 1 and self.rolled_back_at.startswith(f"step {self.first}%")

    def document(self) -> dict[str, Any]:
        return {
            "first_step_percent": self.first,
            "requests": self.requests,
            "failed": self.failures,
            "failed_non_2xx": self.failed,
            "failed_socket_errors": self.errors,
            "failed_share": self.share,
            "expected_share": self.expected,
            "rollback_seconds": self.seconds,
            "apply_exit": self.exit_code,
            "rolled_back_at": self.rolled_back_at,
            "as_expected": self.as_expected,
            "failure_samples": self.samples,
        }


def _rolled_back_at(output: str) -> str:
    marker = "canary rolled back at "
    for line in output.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return ""


def canary_row(tmp: Path, first: int, env: dict[str, str]) -> Row:
    project = f"lbrec-bench-canary-{first}-{uuid.uuid4().hex[:6]}"
    folder = tmp / project
    (folder / "config").mkdir(parents=True)
    listen, admin = _free_ports(2)
    image = f"{project}-app:1"
    built: list[str] = []
    lbrec = [sys.executable, "-m", "lbrec"]
    proxy: subprocess.Popen[bytes] | None = None
    load: Load | None = None
    try:
        built.append(image)  # removed in finally even if the build stops half-way
        _build(tmp / f"{project}-context", image, env)
        spec = folder / "desired-state.yaml"
        spec.write_text(_spec(project, listen, admin, image, first=first, env="{FAIL_EVERY: '0'}"))
        _must(_run([*lbrec, "apply"], folder, env), "lbrec apply (first)")
        proxy = _proxy(folder, env, listen, admin)
        load = Load(listen)
        load.start()
        spec.write_text(
            _spec(project, listen, admin, image, first=first, env=f"{{FAIL_EVERY: '{FAIL_EVERY}'}}")
        )
        start = time.monotonic()
        result = _run([*lbrec, "apply"], folder, env)
        seconds = time.monotonic() - start
        time.sleep(1.0)
        load.stop()
        output = result.stdout + "\n" + result.stderr
        row = Row(
            first,
            load.total,
            load.failed,
            load.errors,
            seconds,
            result.returncode,
            _rolled_back_at(output),
            dict(load.samples.most_common(5)),
        )
        if not row.as_expected:
            print(
                f"first step {first}%: expected exit 1 and a rollback at step {first}%, got:\n"
                f"exit {result.returncode}\n{output}",
                file=sys.stderr,
            )
        return row
    finally:
        if load is not None:
            load.stop()
        if proxy is not None:
            _stop(proxy)
        _cleanup(project, built)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first", type=int, nargs="+", default=[1, 5, 25], metavar="PERCENT")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args()
    if any(not 0 < p < 50 for p in args.first):
        parser.error("every first step must be between 1 and 49 (the next step is 50)")
    env = dict(os.environ, NO_COLOR="1", LBREC_BASE_IMAGE=BASE_IMAGE)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lbrec-bench-canary-") as name:
        for first in args.first:
            rows.append(canary_row(Path(name), first, env))
    ok = all(r.as_expected for r in rows)
    if args.json:
        print(
            json.dumps({"fail_every": FAIL_EVERY, "rows": [r.document() for r in rows]}, indent=2)
        )
        return 0 if ok else 1
    print(f"bad version: every {FAIL_EVERY}rd answer a 500; interval 5s, min_requests 20")
    header = ("first step", "requests", "failed", "failed %", "rollback s", "expected %")
    print("{:>10} {:>9} {:>7} {:>9} {:>10} {:>10}".format(*header))
    for r in rows:
        print(
            f"{r.first:>9}% {r.requests:>9} {r.failures:>7} {r.share:>9.2%} "
            f"{r.seconds:>10.1f} {r.expected:>10.2%}"
            + ("" if r.as_expected else f"  (exit {r.exit_code}: {r.rolled_back_at or '-'})")
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
