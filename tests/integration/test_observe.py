"""Observing while containers come and go, on the real engine: one snapshot per observation,
and a container that vanishes between the list and the inspect is simply not seen."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from lbrec.reconciler.adapters.engines.compose import ComposeDocker
from lbrec.reconciler.core.errors import LbrecError

from .conftest import BASE_IMAGE, Project

pytestmark = pytest.mark.docker


def _run_container(project: Project, backend: str) -> str:
    labels = ["--label", f"lbrec.project={project.name}", "--label", f"lbrec.backend={backend}"]
    return subprocess.run(
        ["docker", "run", "-d", *labels, BASE_IMAGE, "sleep", "60"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_observe_while_containers_are_removed(project: Project) -> None:
    docker = ComposeDocker(folder=project.folder, project=project.name, compose_file="x.yml")
    ids = [_run_container(project, f"r{i}") for i in range(6)]
    seen = docker.observe()
    assert sorted(c.id for c in seen) == sorted(ids)
    assert all(c.state == "running" and c.started_at for c in seen)
    errors: list[BaseException] = []
    counts: list[int] = []
    stop = threading.Event()

    def observe_in_a_loop() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                counts.append(len(docker.observe()))
            except (LbrecError, Exception) as err:  # any exception is the bug
                errors.append(err)
                return

    workers = [threading.Thread(target=observe_in_a_loop) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for container in ids:  # removed one by one while both observers run
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=True)
            time.sleep(0.1)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert errors == []
    assert counts and counts[-1] == 0 and max(counts) <= 6
    assert docker.observe() == ()
