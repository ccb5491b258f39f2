"""Zero-downtime rollouts (issue 9) end to end on the real engine.

Every test runs its own Compose project and its own proxy, then changes a backend (code, image,
replicas, env, a broken version, a long-lived tunnel) under a bounded load through the proxy
that counts every non-2xx answer and every socket error: none may fail.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import BASE_IMAGE, Project, free_ports, http_request, wait_until

pytestmark = pytest.mark.docker

# Fast rollouts for tests; healthy_deadline stays generous for a loaded 2-core machine.
ROLLOUT = "{min_healthy_time: 0.5s, healthy_deadline: 20s, drain_timeout: %s}"


def _spec(
    project: Project, listen: int, admin: int, backends: list[str], *, drain: str = "5s"
) -> str:
    """A desired state; each backend is a YAML flow mapping, e.g. `{name: b1, port: 9001}`."""
    lines = [
        f"project: {project.name}",
        f"listen: 127.0.0.1:{listen}",
        f"admin: 127.0.0.1:{admin}",
        "health: {interval: 0.5, timeout: 1.0, rise: 1, fall: 2}",
        f"rollout: {ROLLOUT % drain}",
        "backends:",
        *(f"  - {backend}" for backend in backends),
    ]
    return "\n".join(lines) + "\n"


# -- what runs and what is routed ----------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    id: str
    backend: str
    name: str
    state: str
    env: tuple[str, ...]


def _instances(project: Project, backend: str | None = None) -> list[Instance]:
    """This project's backend containers (every instance, unlike Project.containers)."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=lbrec.project={project.name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not ids:
        return []
    done = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=False)
    out = []
    for doc in json.loads(done.stdout or "[]"):
        labels = doc["Config"]["Labels"] or {}
        if labels.get("lbrec.role") != "backend":
            continue
        if backend is not None and labels.get("lbrec.backend") != backend:
            continue
        out.append(
            Instance(
                id=doc["Id"],
                backend=labels["lbrec.backend"],
                name=doc["Name"].lstrip("/"),
                state=doc["State"]["Status"],
                env=tuple(doc["Config"]["Env"] or ()),
            )
        )
    return sorted(out, key=lambda i: i.name)


def _running_ids(project: Project, backend: str | None = None) -> set[str]:
    return {i.id for i in _instances(project, backend) if i.state == "running"}


def _pool(project: Project, backend: str | None = None) -> list[dict[str, Any]]:
    """The entries of config/backends.json (of one backend)."""
    entries: list[dict[str, Any]] = project.pool["backends"]  # type: ignore[assignment]
    return [e for e in entries if backend is None or e["name"] == backend]


def _routed_names(project: Project, backend: str | None = None) -> set[str]:
    return {e["instance"] for e in _pool(project, backend)}


def _names(project: Project, ids: set[str]) -> set[str]:
    return {i.name for i in _instances(project) if i.id in ids}


def _in_sync(project: Project) -> None:
    d = project.lbrec("diff")
    assert d.returncode == 0, f"a second diff plans something:\n{d.stdout}\n{d.stderr}"


# -- the proxy -----------------------------------------------------------------------------------


@contextmanager
def _proxy(project: Project, listen: int, admin: int) -> Iterator[subprocess.Popen[bytes]]:
    """Our own proxy on config/backends.json (written by the first apply), stopped by pid."""
    log_path = project.folder / "proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--config",
                str(project.folder / "config/backends.json"),
            ],
            cwd=project.folder,
            env=project.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: (
                    http_request("GET", admin, "/-/healthz")[0] == 200
                    and http_request("GET", listen)[0] == 200
                ),
                30,
                "the proxy to answer",
                log=log_path,
            )
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()  # our own child, by pid
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Load:
    """A few threads, each on one keep-alive connection to the proxy, bounded by a total
    request count and a deadline. Every non-2xx answer and every socket error is a failure."""

    port: int
    threads: int = 3
    max_requests: int = 200_000
    seconds: float = 120.0
    path: str = "/"
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    bodies: Counter[str] = field(default_factory=Counter)
    _sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _take(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
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
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                    body = response.read().decode(errors="replace")
                except (OSError, http.client.HTTPException) as err:
                    with self._lock:
                        self.failures.append(f"{type(err).__name__}: {err}")
                    conn.close()
                    conn = None
                    continue
                with self._lock:
                    if 200 <= response.status < 300:
                        self.ok += 1
                        self.bodies[body] += 1
                    else:
                        self.failures.append(f"{response.status} {body[:120]!r}")
                if response.will_close:
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def start(self) -> None:
        deadline = time.monotonic() + self.seconds
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(deadline,), name=f"load-{n}")
            worker.daemon = True
            worker.start()
            self._workers.append(worker)
        wait_until(lambda: self.ok + len(self.failures) >= 20, 30, "the load to get going")

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def check(self, context: str = "") -> None:
        assert self.failures == [], (
            f"{len(self.failures)} of {self.ok + len(self.failures)} requests failed, e.g. "
            f"{Counter(self.failures).most_common(5)}\n{context}"
        )
        assert self.ok > 100, f"only {self.ok} requests were made\n{context}"


@contextmanager
def _load(port: int, **kwargs: Any) -> Iterator[Load]:
    """Load while the body runs, and for 1 s after it."""
    load = Load(port, **kwargs)
    load.start()
    try:
        yield load
        time.sleep(1.0)
    finally:
        load.stop()


def _out(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# -- images of our own ---------------------------------------------------------------------------

_APP = r"""
import base64, hashlib, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "v0")
HEALTH_STATUS = int(os.environ.get("HEALTH_STATUS", "200"))
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))  # every Nth answer to / is a 500
DELAY = float(os.environ.get("DELAY", "0"))  # seconds added to every answer to /
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
        if self.path == "/health":
            self._send(HEALTH_STATUS, b"health\n")
        elif self.path == "/ws" and "websocket" in self.headers.get("Upgrade", "").lower():
            key = self.headers.get("Sec-WebSocket-Key", "")
            digest = hashlib.sha1((key + GUID).encode()).digest()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", base64.b64encode(digest).decode())
            self.end_headers()
            self.close_connection = True
            while True:  # a raw echo: enough for a tunnel test
                data = self.rfile.read1(65536)
                if not data:
                    return
                self.wfile.write(data)
        else:
            global SERVED
            SERVED += 1
            if DELAY:
                time.sleep(DELAY)
            if FAIL_EVERY and SERVED % FAIL_EVERY == 0:
                self._send(500, b"broken\n")
                return
            self._send(200, f"{VERSION} {os.environ.get('GREETING', '')}\n".encode())

    def log_message(self, format, *args):
        return


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(float(os.environ.get("START_DELAY", "0")))  # a slow starter, like most apps
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler)
    server.daemon_threads = True
    print(f"app {VERSION} listening", flush=True)
    server.serve_forever()


main()
"""

_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG VERSION=v0
ARG HEALTH_STATUS=200
ARG START_DELAY=0
ENV VERSION=${VERSION} HEALTH_STATUS=${HEALTH_STATUS} START_DELAY=${START_DELAY} \\
    PYTHONUNBUFFERED=1
COPY app.py /app.py
STOPSIGNAL SIGTERM
CMD ["python3", "/app.py"]
"""


@contextmanager
def _app_images(project: Project, variants: dict[str, dict[str, str]]) -> Iterator[dict[str, str]]:
    """Build lbrec-t-<uuid>-app:<tag> per variant (build args); tag -> image. On the way out
    this project's containers go first (by id), then the images."""
    repo = f"lbrec-t-{uuid.uuid4().hex[:8]}-app"
    context = project.folder.parent / f"{repo}-context"
    context.mkdir()
    (context / "Dockerfile").write_text(_DOCKERFILE)
    (context / "app.py").write_text(_APP)
    images: dict[str, str] = {}
    try:
        for tag, args in variants.items():
            image = f"{repo}:{tag}"
            cmd = ["docker", "build", "-q", "-t", image, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
            for key, value in args.items():
                cmd += ["--build-arg", f"{key}={value}"]
            done = subprocess.run(
                [*cmd, str(context)], capture_output=True, text=True, check=False, timeout=300
            )
            assert done.returncode == 0, f"docker build {image} failed:\n{done.stderr}"
            images[tag] = image
        yield images
    finally:
        ids = [i.id for i in _instances(project)]
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
        if images:
            subprocess.run(
                ["docker", "rmi", "-f", *images.values()], capture_output=True, check=False
            )


def _get_body(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return f"{response.status} {response.read().decode()}"
    finally:
        conn.close()


# -- the tests -----------------------------------------------------------------------------------


def test_code_change_of_both_sample_backends(project: Project) -> None:
    listen, admin = free_ports(2)
    project.write(
        _spec(
            project,
            listen,
            admin,
            ["{name: backend1, port: 9001, weight: 2}", "{name: backend2, port: 9002, weight: 1}"],
        )
    )
    project.lbrec("apply", check=True)
    before = _running_ids(project)
    assert len(before) == 2
    with _proxy(project, listen, admin):
        app = project.folder / "backend/app.py"
        app.write_text(app.read_text() + "\n# a new version\n")
        with _load(listen) as load:
            r = project.lbrec("apply")
        load.check(_out(r))
    assert r.returncode == 0, _out(r)
    assert "backend1 (replace 1 instance" in r.stdout and "backend2 (replace 1 instance" in r.stdout
    after = _running_ids(project)
    assert len(after) == 2 and not after & before, (before, after)
    assert {i.id for i in _instances(project)} == after  # the old ones are gone
    assert _routed_names(project) == _names(project, after)
    assert {e["name"]: e["weight"] for e in _pool(project)} == {"backend1": 2, "backend2": 1}
    assert {"Hello from backend1\n", "Hello from backend2\n"} <= set(load.bodies)
    _in_sync(project)


def test_code_change_of_a_single_backend(project: Project) -> None:
    listen, admin = free_ports(2)
    project.write(_spec(project, listen, admin, ["{name: solo, port: 8000, replicas: 1}"]))
    project.lbrec("apply", check=True)
    (old,) = _running_ids(project, "solo")
    with _proxy(project, listen, admin):
        app = project.folder / "backend/app.py"
        app.write_text(app.read_text() + "\n# solo v2\n")
        with _load(listen) as load:
            r = project.lbrec("apply")
        load.check(_out(r))
    assert r.returncode == 0, _out(r)
    (new,) = _running_ids(project, "solo")
    assert new != old
    assert [i.id for i in _instances(project)] == [new]
    assert _routed_names(project) == _names(project, {new})
    _in_sync(project)


def test_image_tag_change(project: Project) -> None:
    listen, admin = free_ports(2)
    # v2 takes 2 s to listen, as real applications do: routing it early would fail requests.
    variants = {"1": {"VERSION": "v1"}, "2": {"VERSION": "v2", "START_DELAY": "2"}}
    with _app_images(project, variants) as images:
        web = "{name: web, port: 8000, image: %s, health: {path: /health}}"
        project.write(_spec(project, listen, admin, [web % images["1"]]))
        project.lbrec("apply", check=True)
        (old,) = _running_ids(project, "web")
        with _proxy(project, listen, admin):
            assert _get_body(listen) == "200 v1 \n"
            project.write(_spec(project, listen, admin, [web % images["2"]]))
            with _load(listen) as load:
                r = project.lbrec("apply")
            load.check(_out(r))
            assert r.returncode == 0, _out(r)
            assert f"image {images['1']} -> {images['2']}" in r.stdout
            assert load.bodies["v1 \n"] > 0 and load.bodies["v2 \n"] > 0, load.bodies
            assert set(load.bodies) == {"v1 \n", "v2 \n"}
            # The responses switched: only v2 answers now.
            assert Counter(_get_body(listen) for _ in range(20)) == {"200 v2 \n": 20}
        (new,) = _running_ids(project, "web")
        assert new != old and [i.id for i in _instances(project)] == [new]
        _in_sync(project)


def test_replicas_1_to_3_to_1(project: Project) -> None:
    listen, admin = free_ports(2)
    spec = "{name: many, port: 8000, weight: 3, replicas: %d}"
    project.write(_spec(project, listen, admin, [spec % 1]))
    project.lbrec("apply", check=True)
    (first,) = _running_ids(project, "many")
    with _proxy(project, listen, admin):
        project.write(_spec(project, listen, admin, [spec % 3]))
        with _load(listen) as load:
            up = project.lbrec("apply")
        load.check(_out(up))
        assert up.returncode == 0, _out(up)
        three = _running_ids(project, "many")
        assert len(three) == 3 and first in three  # the one that stays is not touched
        pool = _pool(project, "many")
        assert len(pool) == 3 and len({e["url"] for e in pool}) == 3
        assert {e["weight"] for e in pool} == {3}
        assert _routed_names(project) == _names(project, three)
        _in_sync(project)

        project.write(_spec(project, listen, admin, [spec % 1]))
        with _load(listen) as load:
            down = project.lbrec("apply")
        load.check(_out(down))
        assert down.returncode == 0, _out(down)
    one = _running_ids(project, "many")
    assert len(one) == 1 and one <= three  # one of the three stays, untouched
    assert {i.id for i in _instances(project)} == one
    assert len(_pool(project, "many")) == 1 and _routed_names(project) == _names(project, one)
    _in_sync(project)


def test_env_change(project: Project) -> None:
    listen, admin = free_ports(2)
    spec = "{name: envy, port: 8000, env: {GREETING: %s}}"
    project.write(_spec(project, listen, admin, [spec % "x"]))
    project.lbrec("apply", check=True)
    (old,) = _running_ids(project, "envy")
    with _proxy(project, listen, admin):
        project.write(_spec(project, listen, admin, [spec % "y"]))
        with _load(listen) as load:
            r = project.lbrec("apply")
        load.check(_out(r))
    assert r.returncode == 0, _out(r)
    assert "envy (replace 1 instance" in r.stdout and "env " in r.stdout
    (new,) = _running_ids(project, "envy")
    assert new != old
    (instance,) = _instances(project)
    assert instance.id == new and "GREETING=y" in instance.env
    _in_sync(project)


# A new version whose health never passes: it answers 500 on /health, or it exits at once
# (then restart: unless-stopped restarts it, over and over).
_BROKEN = {
    "health-500": ("image: {bad}", "answered 500"),
    "command-exits": (
        "image: {good}, command: [python3, -c, \"print('boom: no config'); raise SystemExit(3)\"]",
        "boom: no config",
    ),
}


@pytest.mark.parametrize("how", sorted(_BROKEN))
def test_broken_new_version_is_rolled_back(project: Project, how: str) -> None:
    listen, admin = free_ports(2)
    variants = {"1": {"VERSION": "v1"}, "bad": {"VERSION": "bad", "HEALTH_STATUS": "500"}}
    with _app_images(project, variants) as images:
        # Its own rollout: a short healthy_deadline keeps the two failed attempts fast.
        web = (
            "{name: web, port: 8000, %s, rollout: {min_healthy_time: 0.5s, "
            "healthy_deadline: 6s, drain_timeout: 5s}}"
        )
        project.write(_spec(project, listen, admin, [web % f"image: {images['1']}"]))
        project.lbrec("apply", check=True)
        (old,) = _running_ids(project, "web")
        routed = _pool(project, "web")
        change, why = _BROKEN[how]
        broken = web % change.format(bad=images["bad"], good=images["1"])
        with _proxy(project, listen, admin):
            project.write(_spec(project, listen, admin, [broken]))
            with _load(listen) as load:
                r = project.lbrec("apply")
                assert r.returncode == 1, _out(r)
                assert "FAILED web" in r.stdout and "rolled back" in r.stdout, _out(r)
                assert why in r.stdout, _out(r)  # the failing answer or the log's tail
                assert "rolled_back=1" in r.stdout and "failed=1" in r.stdout, _out(r)
                # The old instance was never touched and is the only one routed.
                assert [(i.id, i.state) for i in _instances(project)] == [(old, "running")]
                assert _pool(project, "web") == routed

                # The same broken version: planned again, fails again, the old one stays.
                d = project.lbrec("diff")
                assert d.returncode == 1 and "web (replace 1 instance" in d.stdout, _out(d)
                again = project.lbrec("apply")
                assert again.returncode == 1, _out(again)
                assert "rolled back" in again.stdout and "rolled_back=1" in again.stdout
                assert [(i.id, i.state) for i in _instances(project)] == [(old, "running")]
                assert _pool(project, "web") == routed
            load.check(_out(r) + _out(again))
        assert set(load.bodies) == {"v1 \n"}


@dataclass
class _Tunnel:
    """An upgraded connection through the proxy that echoes; when each echo came back and
    when the connection closed (monotonic clock)."""

    sock: socket.socket
    echoes: list[float] = field(default_factory=list)
    wrong: list[bytes] = field(default_factory=list)
    closed_at: float | None = None
    error: str = ""


def _open_tunnel(port: int) -> _Tunnel:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    assert head.endswith(b"\r\n\r\n"), head  # nothing but the head yet
    return _Tunnel(sock)


def _echo(tunnel: _Tunnel, stop: threading.Event, seconds: float) -> None:
    """Send a line every 0.1 s and read it back, until the tunnel closes (bounded)."""
    deadline = time.monotonic() + seconds
    for n in range(5000):
        if stop.is_set() or time.monotonic() > deadline:
            return
        message = f"ping {n}\n".encode()
        try:
            tunnel.sock.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = tunnel.sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError("closed by the peer")
                got += chunk
        except OSError as err:
            tunnel.closed_at = time.monotonic()
            tunnel.error = repr(err)
            return
        if got == message:
            tunnel.echoes.append(time.monotonic())
        else:
            tunnel.wrong.append(got)
        time.sleep(0.1)


def _watch_pool(
    project: Project, stop: threading.Event, seen: list[tuple[float, frozenset[str]]]
) -> None:
    """Record every change of the routed URLs of backends.json (bounded: 2 min)."""
    deadline = time.monotonic() + 120
    last: frozenset[str] | None = None
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            urls = frozenset(e["url"] for e in _pool(project))
        except (OSError, ValueError):
            urls = last or frozenset()
        if urls != last:
            seen.append((time.monotonic(), urls))
            last = urls
        time.sleep(0.02)


def _first(
    seen: list[tuple[float, frozenset[str]]], test: Callable[[frozenset[str]], bool]
) -> float:
    return next(t for t, urls in seen if test(urls))


def test_websocket_is_drained_across_a_replace(project: Project) -> None:
    listen, admin = free_ports(2)
    drain = 3.0
    with _app_images(project, {"1": {"VERSION": "v1"}, "2": {"VERSION": "v2"}}) as images:
        web = "{name: web, port: 8000, image: %s}"
        project.write(_spec(project, listen, admin, [web % images["1"]], drain="3s"))
        project.lbrec("apply", check=True)
        (old_url,) = {e["url"] for e in _pool(project, "web")}
        with _proxy(project, listen, admin):
            tunnel = _open_tunnel(listen)
            stop = threading.Event()
            seen: list[tuple[float, frozenset[str]]] = []
            threads = [
                threading.Thread(target=_echo, args=(tunnel, stop, 90), daemon=True),
                threading.Thread(target=_watch_pool, args=(project, stop, seen), daemon=True),
            ]
            for thread in threads:
                thread.start()
            try:
                wait_until(lambda: len(tunnel.echoes) >= 3, 10, "the tunnel to echo")
                project.write(_spec(project, listen, admin, [web % images["2"]], drain="3s"))
                with _load(listen) as load:
                    r = project.lbrec("apply")
                load.check(_out(r))
                wait_until(lambda: tunnel.closed_at is not None, 20, "the old tunnel to close")
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=10)
                tunnel.sock.close()
        assert r.returncode == 0, _out(r)
        assert "still in flight after 3s (drain_timeout)" in r.stdout, _out(r)
        assert tunnel.wrong == []
        routed = _first(seen, lambda urls: len(urls - {old_url}) > 0)  # the new one routed
        left = _first(seen, lambda urls: old_url not in urls)  # the old one out of the pool
        assert routed <= left, seen
        closed = tunnel.closed_at
        assert closed is not None
        # Still echoing after the new instance was routed and the old one left the pool...
        assert any(left < t < closed for t in tunnel.echoes), (left, closed, tunnel.echoes[-5:])
        # ...and closed only once drain_timeout had passed since it left the pool (the
        # watcher samples every 20 ms, so "left" may be seen up to that late).
        assert closed - left >= drain - 0.1, (closed - left, tunnel.error)
        assert set(load.bodies) <= {"v1 \n", "v2 \n"} and "v2 \n" in load.bodies
        _in_sync(project)


def _backend_images(project: Project) -> set[str]:
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"{project.name}-backend"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return set(out)


def test_old_images_are_collected_keeping_the_previous_one(project: Project) -> None:
    listen, admin = free_ports(2)
    project.write(_spec(project, listen, admin, ["{name: gc, port: 8000}"]))
    project.lbrec("apply", check=True)
    seen: list[set[str]] = [_backend_images(project)]
    app = project.folder / "backend/app.py"
    for n in range(3):
        app.write_text(app.read_text() + f"\n# gc v{n + 2}\n")
        project.lbrec("apply", check=True)
        seen.append(_backend_images(project))
    running = subprocess.run(
        ["docker", "inspect", "--format", "{{.Config.Image}}", *_running_ids(project, "gc")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [len(s) for s in seen] == [1, 2, 2, 2]  # the deployed one and the previous one
    assert set(running) < seen[-1]
    assert seen[-1] == set(running) | (seen[-2] & seen[-1])  # the previous deploy was kept
