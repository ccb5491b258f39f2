"""`lbrec up` serves first (issue 26, issue 25 point 3), as real processes on 127.0.0.1 with the
Docker engine unreachable (nothing here needs one): the listeners of the desired state open at
once and answer 503 with the reason until this folder's own pool is routed; a foreign or stale
backends.json (the one committed to a repository, another folder's) is never served; `up --repo`
serves the folder's last good pool at once and keeps serving while the engine cannot be reached.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.conftest import free_ports

REPO = Path(__file__).resolve().parents[3]


def _get(port: int, path: str = "/") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.getheader("X-Backend") or "", answer.read().decode()
    finally:
        conn.close()


def _wait(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = ""

    def do_GET(self) -> None:
        body = self.name.encode()
        self.send_response(200)
        self.send_header("X-Backend", self.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[Callable[[str], int]]:
    """Start a loopback HTTP server answering with its name; returns its port."""
    servers: list[ThreadingHTTPServer] = []

    def start(name: str) -> int:
        handler = type(f"H{name}", (_Named,), {"name": name})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _pool(folder: Path, backends: list[tuple[str, int]], deploy: dict[str, str] | None) -> None:
    data: dict[str, object] = {
        "version": 1,
        "generation": "feedc0ffee00",
        "health": {"interval": 0.5, "rise": 1, "fall": 2},
        "backends": [{"name": n, "url": f"http://127.0.0.1:{p}", "weight": 1} for n, p in backends],
    }
    if deploy is not None:
        data["deploy"] = deploy
    # The listeners of the folder's desired state, as a pass writes them: a pool without them
    # would ask `up` to move to the defaults (127.0.0.1:8080/8081), which other programs hold.
    spec = (folder / "desired-state.yaml").read_text()
    for key in ("listen", "admin"):
        data[key] = spec.split(f"{key}: ", 1)[1].split("\n", 1)[0]
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config/backends.json").write_text(json.dumps(data))


class _Up:
    def __init__(self, folder: Path, *args: str) -> None:
        self.log = folder / "up.log"
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            DOCKER_HOST="unix:///nonexistent/docker.sock",  # the engine cannot be reached
            NO_COLOR="1",
        )
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lbrec", "up", *args],
                cwd=folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.folder = folder

    def proxies(self) -> list[int]:
        data = json.loads((self.folder / ".lbrec/proxy.pids").read_text())
        return [int(p) for p in data["proxies"]]

    def stop(self) -> int:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    return self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            return self.proc.wait()
        finally:  # the proxies run in a session of their own: never leave one behind
            with contextlib.suppress(OSError, ValueError, KeyError):
                for pid in self.proxies():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    deploy = tmp_path / "d"
    deploy.mkdir()
    return deploy


def _spec(folder: Path, project: str, listen: int, admin: int) -> None:
    (folder / "desired-state.yaml").write_text(
        f"project: {project}\nlisten: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n"
        "proxy: {workers: 1}\n"
        "backends:\n  - {name: web, image: example.invalid/web:1, port: 9001}\n"
    )


def test_listeners_open_at_once_with_503_and_a_foreign_pool_is_never_served(
    folder: Path, backend: Callable[[str], int]
) -> None:
    """The repository's own config/backends.json (no stamp, listen 8080) and another folder's
    (stamped with its file) were served at start before issue 26, on the file's listen."""
    listen, admin = free_ports(2)
    _spec(folder, "serve-first", listen, admin)
    foreign = backend("foreign")
    for stamp in (None, {"project": "serve-first", "file": "/elsewhere/desired-state.yaml"}):
        _pool(folder, [("web", foreign)], stamp)
        up = _Up(folder)
        try:
            _wait(lambda: _get(listen)[0] == 503, 30, "the listener to answer", up.log)
            for _ in range(20):
                status, served_by, text = _get(listen)
                assert (status, served_by) == (503, ""), text
                assert "no pool yet" in text and "not served" in text, text
            assert up.proc.poll() is None
            # The first pass fails (no engine) and retries; the listener stays, still 503.
            log = up.log
            _wait(lambda: "pass=1 failed" in log.read_text(), 30, "the first pass", log)  # noqa: B023
            assert _get(listen)[:2] == (503, "")
            # This folder's own pool, once a pass writes it, is served at once.
            own = backend("own")
            _pool(
                folder,
                [("web", own)],
                {"project": "serve-first", "file": str(folder / "desired-state.yaml")},
            )
            _wait(lambda: _get(listen)[1] == "own", 30, "this folder's pool to serve", up.log)
            assert all(_get(listen)[1] == "own" for _ in range(10))
        finally:
            assert up.stop() == 0, up.log.read_text()[-3000:]


def test_a_listen_change_moves_the_listener_without_a_gap(
    folder: Path, backend: Callable[[str], int]
) -> None:
    listen, admin, moved = free_ports(3)
    _spec(folder, "mover", listen, admin)
    own = backend("own")
    stamp = {"project": "mover", "file": str(folder / "desired-state.yaml")}
    _pool(folder, [("web", own)], stamp)
    up = _Up(folder)
    try:
        _wait(lambda: _get(listen)[1] == "own", 30, "up to serve its last good pool", up.log)
        # A pass wrote the new listen (as it does after the file changed): new socket first.
        data = json.loads((folder / "config/backends.json").read_text())
        data["listen"] = f"127.0.0.1:{moved}"
        (folder / "config/backends.json").write_text(json.dumps(data))
        _wait(lambda: _get(moved)[1] == "own", 30, "the new listener", up.log)
        _wait(lambda: _refused(listen), 60, "the old listener to close", up.log)
        assert "listeners moved" in up.log.read_text()
    finally:
        assert up.stop() == 0, up.log.read_text()[-3000:]


def _refused(port: int) -> bool:
    try:
        _get(port)
    except ConnectionRefusedError:
        return True
    return False


def test_up_repo_serves_the_last_good_pool_first_and_keeps_serving_without_the_engine(
    folder: Path, tmp_path: Path, backend: Callable[[str], int]
) -> None:
    """Issue 25 point 3: `up --repo` ran the whole first sync before it bound, and exited 3
    with the engine unreachable."""
    listen, admin = free_ports(2)
    origin = tmp_path / "origin"
    origin.mkdir()
    _spec(origin, "gitops", listen, admin)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=origin, check=True)
    subprocess.run(["git", "add", "desired-state.yaml"], cwd=origin, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=origin, check=True)
    # The deploy folder as a previous `up --repo` left it: the file and its stamped pool.
    (folder / "desired-state.yaml").write_text((origin / "desired-state.yaml").read_text())
    own = backend("own")
    _pool(folder, [("web", own)], {"project": "gitops", "file": str(folder / "desired-state.yaml")})
    up = _Up(folder, "--repo", str(origin), "--branch", "main", "--interval", "5s")
    try:
        _wait(lambda: _get(listen)[1] == "own", 30, "up --repo to serve first", up.log)
        _wait(lambda: "failed" in up.log.read_text(), 60, "the first sync to fail", up.log)
        assert up.proc.poll() is None, up.log.read_text()[-3000:]
        assert all(_get(listen)[1] == "own" for _ in range(10))
    finally:
        assert up.stop() == 0, up.log.read_text()[-3000:]

    # A new folder: no pool yet; the listeners (from the branch head) answer 503 at once.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    up = _Up(fresh, "--repo", str(origin), "--branch", "main", "--interval", "5s")
    try:
        _wait(lambda: _get(listen)[0] == 503, 60, "up --repo in a new folder to listen", up.log)
        assert "no pool yet" in _get(listen)[2]
    finally:
        assert up.stop() == 0, up.log.read_text()[-3000:]
