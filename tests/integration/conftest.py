"""Fixtures for tests against the real Docker engine: one throwaway Compose project each."""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.netns_engine import Node

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("LBREC_BASE_IMAGE", "lbrec-base:bookworm")


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now, *below* the kernel's ephemeral range.

    Docker publishes every instance on a host port it picks from the ephemeral range (32768+),
    so a test's listen port taken from there could be handed to a container between this call
    and the proxy's bind (seen: `Address already in use` for the proxy's listen port)."""
    low, high = 20000, _ephemeral_low() - 1
    ports: list[int] = []
    socks = []
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    while len(ports) < count:
        port = rng.randint(low, high)
        if port in ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
        ports.append(port)
    for s in socks:
        s.close()
    return ports


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def run_lbrec(
    folder: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m lbrec ARGS` in ``folder`` with ``env``, output captured, no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "lbrec", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def start_lbrec(
    folder: Path, env: dict[str, str], log_name: str, *args: str
) -> subprocess.Popen[bytes]:
    """`python -m lbrec ARGS` started in ``folder`` with ``env``, its output (both streams)
    in ``folder/log_name``, no stdin; the caller stops it (by its pid)."""
    with (folder / log_name).open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lbrec", *args],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@dataclass
class Project:
    folder: Path
    name: str
    env: dict[str, str]

    @property
    def spec(self) -> Path:
        return self.folder / "desired-state.yaml"

    @property
    def pool(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.folder / "config/backends.json").read_text())
        return data

    def url(self, backend: str) -> str:
        """Where the pool routes ``backend`` (its first instance): the host port Docker
        allocated, read back by lbrec."""
        for entry in self.pool["backends"]:  # type: ignore[attr-defined]
            if entry["name"] == backend:
                return str(entry["url"])
        raise AssertionError(f"{backend} is not routed: {self.pool}")

    def routed(self) -> dict[str, int]:
        return {b["name"]: b["weight"] for b in self.pool["backends"]}  # type: ignore[attr-defined]

    def lbrec(
        self, *args: str, check: bool | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = run_lbrec(self.folder, self.env, *args, timeout=timeout)
        if check is True and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(
                f"lbrec {command} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def assert_in_sync(self) -> None:
        """`lbrec diff` exits 0; if not, the failure shows the plan and every container's
        labels (what the planner compared)."""
        result = self.lbrec("diff")
        if result.returncode != 0:
            raise AssertionError(
                f"diff exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
                + project_labels(self.name)
            )

    def containers(self, *, all_: bool = True) -> dict[str, dict[str, str]]:
        """backend -> {id, state, started} for this project's containers only."""
        out = subprocess.run(
            [
                "docker",
                "ps",
                "--no-trunc",
                "--filter",
                f"label=lbrec.project={self.name}",
                "--format",
                "{{.ID}}",
            ]
            + (["-a"] if all_ else []),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        result: dict[str, dict[str, str]] = {}
        if not out:
            return result
        # A container can go between the listing and the inspect (lbrec is removing it):
        # `docker inspect` then still prints the others and exits 1; keep what it printed.
        done = subprocess.run(
            ["docker", "inspect", *out], capture_output=True, text=True, check=False
        )
        inspect = json.loads(done.stdout or "[]")
        for c in inspect:
            if c["Config"]["Labels"].get("lbrec.role") == "lb":
                continue
            result[c["Config"]["Labels"]["lbrec.backend"]] = {
                "id": c["Id"],
                "state": c["State"]["Status"],
                "started": c["State"]["StartedAt"],
                "revision": c["Config"]["Labels"].get("lbrec.revision", ""),
            }
        return result

    def write(self, text: str) -> None:
        self.spec.write_text(text)

    def snapshot(self) -> dict[str, bytes | None]:
        files = ["desired-state.yaml", "docker-compose.yml", "config/backends.json"]
        return {
            f: (self.folder / f).read_bytes() if (self.folder / f).exists() else None for f in files
        }


def demo_folder(folder: Path) -> Path:
    """``folder``, made, with the demo Dockerfiles and backend of this checkout copied in."""
    folder.mkdir()
    for name in ("Dockerfile.backend", "Dockerfile.proxy", ".dockerignore"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(
        REPO / "backend", folder / "backend", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def lbrec_env() -> dict[str, str]:
    """This process's environment for running lbrec from this checkout: the offline base
    image, no colour, the checkout first on PYTHONPATH."""
    env = dict(os.environ, LBREC_BASE_IMAGE=BASE_IMAGE, NO_COLOR="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextmanager
def project_in(tmp_path: Path, prefix: str = "lbrec-t") -> Iterator[Project]:
    """A deploy folder with the demo Dockerfiles and backend under ``tmp_path``, named
    ``PREFIX-<random>``; its containers, network and images are removed by label at the end."""
    folder = demo_folder(tmp_path / "deploy")
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield Project(folder=folder, name=name, env=lbrec_env())
    finally:
        remove_project(name)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with project_in(tmp_path) as proj:
        yield proj


def _project_ids(name: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=lbrec.project={name}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()


def project_labels(name: str) -> str:
    """Every container of project ``name``: name, state and labels (for failure messages)."""
    ids = _project_ids(name)
    if not ids:
        return "(no container)"
    template = "{{.Name}} {{.State.Status}} {{json .Config.Labels}}"
    inspected = subprocess.run(
        ["docker", "inspect", "-f", template, *ids], capture_output=True, text=True, check=False
    )
    return inspected.stdout + inspected.stderr


def remove_project(name: str) -> None:
    """What a test's project left on the engine: its containers, network and images, by
    the project's own label and names (never anything else)."""
    ids = _project_ids(name)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    subprocess.run(["docker", "network", "rm", f"{name}_default"], capture_output=True, check=False)
    images = subprocess.run(  # the demo, lb and `build:` images of this project
        ["docker", "images", "-q", "--filter", f"reference={name}-*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True, check=False)


# A new instance must answer healthy this long before it is routed (3 s by default).
FAST_ROLLOUT = "rollout: {min_healthy_time: 0.5s, healthy_deadline: 60s, drain_timeout: 10s}\n"


def spec_text(name: str, backends: list[tuple[str, int, int]], extra: str = "") -> str:
    lines = [f"# test project\nproject: {name}\n{FAST_ROLLOUT}{extra}backends:"]
    for bname, port, weight in backends:
        lines.append(f"  - {{name: {bname}, port: {port}, weight: {weight}}}  # {bname}")
    return "\n".join(lines) + "\n"


def http_request(
    method: str, port: int, path: str = "/", token: str | None = None
) -> tuple[int, str]:
    """(status, X-Backend) of one request to 127.0.0.1:port, on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("X-Backend") or ""
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    """Poll every 0.2 s; connection errors count as "not yet"; fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.2)


@pytest.fixture
def engine() -> Iterator[Node]:
    """A Docker engine of the test's own in a network namespace, with the offline base image
    (tests/support/netns_engine.py, docs/test-engines.md); always torn down."""
    from tests.support.netns_engine import EngineNet

    net = EngineNet.create(nodes=1)
    try:
        net.nodes[0].load_image(BASE_IMAGE)
        yield net.nodes[0]
    finally:
        net.close()
