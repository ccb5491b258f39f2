"""`lbrec up` end to end on the real engine: file edits reach traffic, drift is repaired,
removal drains with zero failed requests under a bounded load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import Project, free_ports, http_request, wait_until

pytestmark = pytest.mark.docker


def _spec(
    project: Project,
    listen: int,
    admin: int,
    backends: list[tuple[str, int, int]],
    mode: str = "host",
) -> str:
    lines = [
        f"project: {project.name}",
        f"proxy: {{mode: {mode}}}",
        f"listen: 127.0.0.1:{listen}",
        f"admin: 127.0.0.1:{admin}",
        "health: {interval: 0.5, timeout: 1.0, rise: 1, fall: 2}",
        "backends:",
    ]
    lines += [f"  - {{name: {n}, port: {p}, weight: {w}}}" for n, p, w in backends]
    return "\n".join(lines) + "\n"


def _save(path: Path, text: str) -> None:
    """Save like an editor does: write a temp file, rename it over the original."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _get(port: int, path: str = "/") -> tuple[int, str]:
    return http_request("GET", port, path)


def _reconciler_metrics(admin: int) -> dict[tuple[str, str], float]:
    """The reconciler's series on the admin /metrics: (name, outcome or loop) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, s.labels.get("outcome", s.labels.get("loop", ""))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("lbrec_reconciler_")
    }


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    wait_until(predicate, timeout, what)


@pytest.fixture(params=["host", "container"])
def up(
    project: Project, request: pytest.FixtureRequest
) -> Iterator[tuple[Project, subprocess.Popen[str], list[int], str]]:
    """`lbrec up` with the proxy in-process (host) or as the lb Compose service (container)."""
    mode: str = request.param
    ports = free_ports(5)
    listen, admin, p1, p2, _p3 = ports
    project.write(_spec(project, listen, admin, [("u1", p1, 1), ("u2", p2, 1)], mode))
    log = open(project.folder / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbrec", "up", "--resync", "2", "--down"],
        cwd=project.folder,
        env=project.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _get(listen)[0] == 200, 180, "lbrec up to serve")
        yield project, proc, ports, mode
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_up_follows_the_file_and_repairs_drift(
    up: tuple[Project, subprocess.Popen[str], list[int], str],
) -> None:
    project, proc, (listen, admin, p1, p2, p3), mode = up
    seen = Counter(_get(listen)[1] for _ in range(20))
    assert seen == {"u1": 10, "u2": 10}

    # Adding a backend to the file makes it serve traffic through the proxy.
    _save(
        project.spec,
        _spec(project, listen, admin, [("u1", p1, 1), ("u2", p2, 1), ("u3", p3, 2)], mode),
    )
    _wait(lambda: "u3" in {_get(listen)[1] for _ in range(8)}, 120, "u3 to serve")

    # Removing one under a bounded load drains it: zero failed requests.
    failures: list[str] = []
    served: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        for _ in range(20000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, backend = _get(listen)
            except OSError as err:
                failures.append(repr(err))
                continue
            if status != 200:
                failures.append(str(status))
            served[backend] += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1)
        _save(project.spec, _spec(project, listen, admin, [("u1", p1, 1), ("u3", p3, 2)], mode))
        _wait(lambda: "u2" not in project.containers(), 120, "u2's container to go")
        time.sleep(1)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert served["u2"] > 0 and sum(served.values()) > 50
    after = Counter(_get(listen)[1] for _ in range(30))
    assert after == {"u1": 10, "u3": 20}

    # A container removed by hand comes back within one resync.
    old = project.containers()["u1"]["id"]
    subprocess.run(["docker", "rm", "-f", old], check=True, capture_output=True)
    _wait(
        lambda: project.containers().get("u1", {}).get("state") == "running",
        60,
        "u1 to be recreated by the resync",
    )
    _wait(lambda: "u1" in {_get(listen)[1] for _ in range(6)}, 30, "u1 to serve again")

    # An invalid file is not applied: the last good state keeps serving.
    _save(project.spec, "backends: [{name: BAD, port: 1}]\n")
    time.sleep(3)
    assert proc.poll() is None
    assert {"u1", "u3"} == {_get(listen)[1] for _ in range(9)}
    if mode == "host":  # the reconciler's metrics beside the proxy's, on the admin listener
        metrics = _reconciler_metrics(admin)
        assert metrics[("lbrec_reconciler_drift_repaired_total", "watch")] >= 1, metrics
        assert metrics[("lbrec_reconciler_passes_total", "changed")] >= 3, metrics
        _wait(
            lambda: _reconciler_metrics(admin)[("lbrec_reconciler_passes_total", "invalid")] >= 1,
            30,
            "the invalid file to be counted",
        )

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    pool = json.loads((project.folder / "config/backends.json").read_text())
    assert [b["name"] for b in pool["backends"]] == ["u1", "u3"]
    # --down: this project's containers and network are gone (the lb container too).
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=lbrec.project={project.name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert left == []
    networks = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"name=^{project.name}_default$"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert networks == []


def test_watch_repairs_drift_at_once_from_docker_events(project: Project) -> None:
    """No resync at all (--resync 0): only `docker events` can bring the container back."""
    (p1,) = free_ports(1)
    project.write(f"project: {project.name}\nbackends:\n  - {{name: e1, port: {p1}, weight: 1}}\n")
    project.lbrec("apply", check=True)
    old = project.containers()["e1"]["id"]
    log = open(project.folder / "watch.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbrec", "watch", "--resync", "0"],
        cwd=project.folder,
        env=project.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: "pass=1 ok" in (project.folder / "watch.log").read_text(), 60, "pass 1")
        subprocess.run(["docker", "rm", "-f", old], check=True, capture_output=True)
        _wait(
            lambda: project.containers().get("e1", {}).get("state") == "running",
            30,
            "e1 to be recreated after its removal was seen in docker events",
        )
        assert project.containers()["e1"]["id"] != old
        assert "docker: destroy e1" in (project.folder / "watch.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        log.close()


def _start_up(
    project: Project, name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path]:
    log_path = project.folder / name
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbrec", "up", "--resync", "2"],
        cwd=project.folder,
        env=env or project.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return proc, log_path


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def test_up_serves_the_last_pool_with_the_engine_unreachable_and_a_second_up_takes_over(
    project: Project,
) -> None:
    listen, admin, p1 = free_ports(3)
    project.write(_spec(project, listen, admin, [("s1", p1, 1)]))
    first, first_log = _start_up(project, "up1.log")
    second: subprocess.Popen[str] | None = None
    try:
        _wait(lambda: _get(listen) == (200, "s1"), 180, "the first lbrec up to serve")
        # A second `lbrec up` in the same folder (a new version) takes the proxy over; the
        # first one stands down (issue 26; it was refused before, exit 2).
        second, second_log = _start_up(project, "up2.log")
        assert first.wait(timeout=120) == 0, first_log.read_text()[-2000:]
        assert "standing down" in first_log.read_text()
        assert "taking over" in second_log.read_text()
        assert _get(listen) == (200, "s1")
    finally:
        _stop(first)
        if second is not None:
            assert _stop(second) == 0
    assert project.containers()["s1"]["state"] == "running"  # no --down: still running

    # Restarted while the engine cannot be reached: the last known good pool is served at
    # once (the containers still run), and the loop keeps retrying beside it.
    unreachable = dict(project.env, DOCKER_HOST="unix:///nonexistent/docker.sock")
    third, third_log = _start_up(project, "up3.log", unreachable)
    try:
        _wait(lambda: _get(listen) == (200, "s1"), 30, "lbrec up to serve the last pool")
        _wait(lambda: "docker" in third_log.read_text().lower(), 30, "the engine error logged")
        assert third.poll() is None, third_log.read_text()[-2000:]
        assert all(_get(listen) == (200, "s1") for _ in range(10))
    finally:
        assert _stop(third) == 0, third_log.read_text()[-2000:]
    project.lbrec("apply", check=True)  # the engine is fine for everyone else
