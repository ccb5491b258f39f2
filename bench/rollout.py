"""Rollouts under load: lbrec's start-first replace against what a Compose user has.

    LBREC_BASE_IMAGE=lbrec-base:bookworm python bench/rollout.py --counts 1 2 5

For each count N, in ONE run, two rows behind the same proxy (``python -m proxy``) and the same
bounded load (keep-alive clients on 127.0.0.1, every non-2xx and every socket error counted):

* ``lbrec``: N demo backends deployed with ``lbrec apply``; then ``backend/app.py`` changes (a
  new build) and ``lbrec apply`` replaces every instance, start first.
* ``compose``: the same N services in a hand-written docker-compose.yml on fixed host ports
  (what the demo did before lbrec 0.3, and what `docker compose up -d --build` users run), the
  proxy routing to those ports; the same change, then ``docker compose up -d --build``; the
  row ends when every backend answers again.

Prints failed requests and rollout wall time for both, and the bound lbrec is held to:
``build + N / max_parallel x (start + min_healthy_time) + 2 s``, where ``build`` is the build time
of the compose row and ``start`` the time a new container takes to answer (measured once).
Every project, container, image and process it makes is its own (unique project names, by id);
traffic goes to loopback only; every load loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIN_HEALTHY = 3.0  # lbrec's default
MAX_REQUESTS = 2_000_000
MAX_SECONDS = 600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Load:
    """A few keep-alive clients; counts 2xx, other statuses and socket errors."""

    port: int
    clients: int = 4
    ok: int = 0
    failed: int = 0
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        conn: http.client.HTTPConnection | None = None
        sent = 0
        while not self._stop.is_set() and time.monotonic() < deadline and sent < MAX_REQUESTS:
            sent += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                good = 200 <= response.status < 300
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed += 1
                        if len(self.samples) < 5:
                            self.samples.append(str(response.status))
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                with self._lock:
                    self.errors += 1
                    if len(self.samples) < 5:
                        self.samples.append(type(err).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def start(self) -> None:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


def _must(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _folder(tmp: Path, name: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    for item in ("Dockerfile.backend", ".dockerignore"):
        shutil.copy(REPO / item, folder / item)
    shutil.copytree(
        REPO / "backend", folder / "backend", ignore=shutil.ignore_patterns("__pycache__")
    )
    (folder / "config").mkdir()
    return folder


def _proxy(folder: Path, env: dict[str, str], admin: int) -> subprocess.Popen[str]:
    log = open(folder / "proxy.log", "w", encoding="utf-8")  # noqa: SIM115 (the proxy's)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--config", str(folder / "config/backends.json")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/-/pool", timeout=1) as r:
                doc = json.loads(r.read())
                if doc["backends"] and all(b["state"] == "up" for b in doc["backends"]):
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    tail = (folder / "proxy.log").read_text()[-2000:]
    pool = (folder / "config/backends.json").read_text()[:2000]
    raise SystemExit(f"the proxy did not come up\n{tail}\n{pool}")


def _change(folder: Path) -> None:
    app = folder / "backend/app.py"
    app.write_text(app.read_text() + f"\n# build {uuid.uuid4().hex}\n")


def _cleanup(project: str) -> None:
    ids = subprocess.run(
        [
            "docker",
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={project}",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    subprocess.run(
        ["docker", "network", "rm", f"{project}_default"], capture_output=True, check=False
    )
    images = subprocess.run(
        ["docker", "images", "-q", "--filter", f"reference={project}*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True, check=False)


@dataclass
class Row:
    kind: str
    count: int
    ok: int
    failed: int
    errors: int
    seconds: float
    build: float = 0.0
    samples: list[str] = field(default_factory=list)


def lbrec_row(tmp: Path, count: int, env: dict[str, str]) -> Row:
    project = f"lbrec-bench-roll-{uuid.uuid4().hex[:6]}"
    folder = _folder(tmp, project)
    listen, admin = _free_port(), _free_port()
    lines = [f"project: {project}", f"listen: 127.0.0.1:{listen}", f"admin: 127.0.0.1:{admin}"]
    lines.append("backends:")
    lines += [f"  - {{name: b{i}, port: {9001 + i}, weight: 1}}" for i in range(count)]
    (folder / "desired-state.yaml").write_text("\n".join(lines) + "\n")
    lbrec = [sys.executable, "-m", "lbrec"]
    proxy = None
    try:
        _must(_run([*lbrec, "apply"], folder, env), "lbrec apply (first)")
        proxy = _proxy(folder, env, admin)
        load = Load(listen)
        load.start()
        time.sleep(2)
        _change(folder)
        start = time.monotonic()
        result = _run([*lbrec, "apply"], folder, env)
        seconds = time.monotonic() - start
        time.sleep(2)
        load.stop()
        _must(result, "lbrec apply (rollout)")
        return Row("lbrec", count, load.ok, load.failed, load.errors, seconds, samples=load.samples)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
        _cleanup(project)


_COMPOSE_SERVICE = """\
  b{i}:
    build: {{context: ., dockerfile: Dockerfile.backend, args: {{BASE_IMAGE: "{base}"}}}}
    image: {project}-backend:latest
    environment: {{BACKEND_NAME: b{i}, PORT: "{port}", HEALTH_PATH: /health}}
    ports: ["127.0.0.1:{port}:{port}"]
    restart: unless-stopped
"""


def compose_row(tmp: Path, count: int, env: dict[str, str]) -> Row:
    project = f"compose-bench-roll-{uuid.uuid4().hex[:6]}"
    folder = _folder(tmp, project)
    listen, admin = _free_port(), _free_port()
    ports = [_free_port() for _ in range(count)]
    base = env.get("LBREC_BASE_IMAGE", "python:3.12-slim")
    services = "".join(
        _COMPOSE_SERVICE.format(i=i, port=port, base=base, project=project)
        for i, port in enumerate(ports)
    )
    (folder / "docker-compose.yml").write_text(f"name: {project}\nservices:\n{services}")
    pool = {
        "listen": f"127.0.0.1:{listen}",
        "admin": f"127.0.0.1:{admin}",
        "backends": [
            {"name": f"b{i}", "url": f"http://127.0.0.1:{port}", "weight": 1}
            for i, port in enumerate(ports)
        ],
    }
    (folder / "config/backends.json").write_text(json.dumps(pool))
    compose = ["docker", "compose"]
    proxy = None
    try:
        _must(_run([*compose, "up", "-d", "--build"], folder, env), "docker compose up (first)")
        proxy = _proxy(folder, env, admin)
        load = Load(listen)
        load.start()
        time.sleep(2)
        _change(folder)
        start = time.monotonic()
        built = _run([*compose, "build"], folder, env)
        build = time.monotonic() - start
        _must(built, "docker compose build")
        _must(_run([*compose, "up", "-d", "--build"], folder, env), "docker compose up")
        deadline = time.monotonic() + 120
        pending = set(ports)
        while pending and time.monotonic() < deadline:
            for port in list(pending):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        pending.discard(port)
                except OSError:
                    pass
            time.sleep(0.05)
        seconds = time.monotonic() - start
        time.sleep(2)
        load.stop()
        return Row(
            "compose", count, load.ok, load.failed, load.errors, seconds, build, load.samples
        )
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=30)
        _cleanup(project)


def start_time(tmp: Path, env: dict[str, str]) -> float:
    """Seconds from `docker run` of the demo image until it answers its health path."""
    project = f"lbrec-bench-start-{uuid.uuid4().hex[:6]}"
    folder = _folder(tmp, project)
    tag = f"{project}:1"
    base = env.get("LBREC_BASE_IMAGE", "python:3.12-slim")
    _must(
        _run(
            [
                "docker",
                "build",
                "-q",
                "-f",
                "Dockerfile.backend",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "-t",
                tag,
                ".",
            ],
            folder,
            env,
        ),
        "docker build",
    )
    cid = ""
    try:
        begin = time.monotonic()
        run = _run(
            [
                "docker",
                "run",
                "-d",
                "-e",
                "PORT=9001",
                "-e",
                "BACKEND_NAME=s",
                "-p",
                "127.0.0.1::9001",
                tag,
            ],
            folder,
            env,
        )
        _must(run, "docker run")
        cid = run.stdout.strip()
        port = _run(["docker", "port", cid, "9001/tcp"], folder, env).stdout.split()[0]
        while time.monotonic() - begin < 60:
            try:
                with urllib.request.urlopen(f"http://{port}/health", timeout=1):
                    return time.monotonic() - begin
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the demo container did not answer within 60 s")
    finally:
        if cid:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args()
    env = dict(os.environ, NO_COLOR="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lbrec-bench-rollout-") as name:
        tmp = Path(name)
        start = start_time(tmp, env)
        for count in args.counts:
            rows.append(compose_row(tmp, count, env))
            rows.append(lbrec_row(tmp, count, env))
    if args.json:
        print(json.dumps({"start": start, "rows": [r.__dict__ for r in rows]}, indent=2))
        return 0
    print(f"container start until healthy: {start:.2f} s; min_healthy_time {MIN_HEALTHY:g} s")
    header = ("backends", "row", "requests", "failed", "errors", "rollout s", "bound s")
    print("{:>8}  {:<8} {:>9} {:>7} {:>7} {:>9}  {}".format(*header))
    for compose, ours in zip(rows[::2], rows[1::2], strict=True):
        bound = compose.build + compose.count * (start + MIN_HEALTHY) + 2
        for row in (compose, ours):
            total = row.ok + row.failed + row.errors
            extra = f"{bound:7.1f}" if row.kind == "lbrec" else f"(build {row.build:.1f} s)"
            print(
                f"{row.count:>8}  {row.kind:<8} {total:>9} {row.failed:>7} {row.errors:>7} "
                f"{row.seconds:>9.1f}  {extra}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
