"""engine: swarm end to end on a real single-node swarm (issue 12, docs/swarm.md).

The swarm is the test's own when the engine is in none (`docker swarm init --advertise-addr
127.0.0.1`, left with `docker swarm leave --force` at the end); an engine already in a swarm is
used as it is and left as it was. Every task publishes its port in host mode on this node, so
all traffic goes to 127.0.0.1 through our own proxy, never to a container or overlay address.
The images are local (`image:` backends; the push path needs a registry, docs/swarm.md).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from .conftest import BASE_IMAGE, REPO, Project, free_ports, http_request, wait_until
from .test_rollout import _load, _out, _pool, _proxy

pytestmark = pytest.mark.docker

IMAGE = "lbrec-swarm-demo"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=300, check=check
    )


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    state = _docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    ours = state == "inactive"
    networks = set(_docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    if ours:
        _docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        if ours:  # as it was found: no swarm, and not the bridge `swarm init` made
            _docker("swarm", "leave", "--force", check=False)
            if "docker_gwbridge" not in networks:
                _docker("network", "rm", "docker_gwbridge", check=False)


@pytest.fixture(scope="module")
def images(swarm: None) -> Iterator[dict[str, str]]:
    """v1 and v2 of the demo app (two tags: a new image to roll out), and a broken one that
    exits at once (a new version Swarm starts and lbrec must roll back)."""
    tag = f"{IMAGE}:{time.monotonic_ns()}"
    _docker(
        "build", "-q", "-t", f"{tag}-v1", "-f", str(REPO / "Dockerfile.backend"),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", str(REPO),
    )  # fmt: skip
    _docker("tag", f"{tag}-v1", f"{tag}-v2")
    broken = subprocess.run(
        ["docker", "build", "-q", "-t", f"{tag}-broken", "-"],
        input=f'FROM {tag}-v1\nCMD ["python3", "-c", "import sys; sys.exit(3)"]\n',
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert broken.returncode == 0
    names = {v: f"{tag}-{v}" for v in ("v1", "v2", "broken")}
    try:
        yield names
    finally:
        _docker("rmi", "-f", *names.values(), check=False)


@pytest.fixture
def stack(project: Project, images: dict[str, str]) -> Iterator[Project]:
    try:
        yield project
    finally:
        _docker("stack", "rm", project.name, check=False)
        wait_until(lambda: not _tasks(project), 60, "the test's stack to go")


def _tasks(project: Project, backend: str | None = None) -> list[dict[str, str]]:
    """The running task containers of the project (of one backend), from the engine."""
    ids = _docker(
        "ps", "-q", "--no-trunc", "--filter", f"label=lbrec.project={project.name}",
    ).stdout.split()  # fmt: skip
    if not ids:
        return []
    docs = json.loads(_docker("inspect", *ids, check=False).stdout or "[]")
    out = []
    for doc in docs:
        labels = doc["Config"]["Labels"]
        if backend is None or labels.get("lbrec.backend") == backend:
            out.append(
                {
                    "id": doc["Id"],
                    "backend": labels.get("lbrec.backend", ""),
                    "service": labels.get("com.docker.swarm.service.name", ""),
                    "image": doc["Config"]["Image"],
                }
            )
    return out


def _spec(project: Project, listen: int, admin: int, web: str, *, replicas: int = 3) -> str:
    return "\n".join(
        [
            "engine: swarm",
            f"project: {project.name}",
            f"listen: 127.0.0.1:{listen}",
            f"admin: 127.0.0.1:{admin}",
            "health: {interval: 0.5, timeout: 1.0, rise: 1, fall: 2}",
            "rollout: {min_healthy_time: 0.5s, healthy_deadline: 60s, drain_timeout: 5s}",
            "backends:",
            f"  - {{name: web, port: 8000, image: {web}, replicas: {replicas}, weight: 3}}",
            f"  - {{name: api, port: 8100, image: {web}, replicas: 2, weight: 2}}",
            "",
        ]
    )


def _apply(project: Project) -> subprocess.CompletedProcess[str]:
    return project.lbrec("apply", "--health-timeout", "90")


def _services(project: Project) -> set[str]:
    out = _docker(
        "service", "ls", "--filter", f"label=lbrec.project={project.name}", "--format", "{{.Name}}"
    ).stdout.split()
    return set(out)


def test_swarm_end_to_end(stack: Project, images: dict[str, str]) -> None:
    project = stack
    listen, admin = free_ports(2)
    project.write(_spec(project, listen, admin, images["v1"]))
    r = _apply(project)
    assert r.returncode == 0, _out(r)
    assert len(_tasks(project, "web")) == 3 and len(_tasks(project, "api")) == 2
    entries = _pool(project)
    assert len(entries) == 5
    assert all(str(e["url"]).startswith("http://127.0.0.1:") for e in entries)  # host mode
    assert {e["name"] for e in entries} == {"web", "api"}
    d = project.lbrec("diff")
    assert d.returncode == 0, _out(d)  # in sync: nothing planned on the Swarm state
    status = project.lbrec("status")
    assert status.returncode == 0 and "NODE" in status.stdout, _out(status)

    # Drift: a service scaled by hand is planned back.
    (web_service,) = {t["service"] for t in _tasks(project, "web")}
    _docker("service", "scale", "--detach=false", f"{web_service}=4")
    d = project.lbrec("diff")
    assert d.returncode == 1 and "replicas 4 -> 3" in d.stdout, _out(d)
    r = _apply(project)
    assert r.returncode == 0, _out(r)
    wait_until(lambda: len(_tasks(project, "web")) == 3, 60, "web back at 3 tasks")
    assert len(_pool(project, "web")) == 3

    # Drift: a service updated by hand to another image is planned back (and deployed back).
    _docker("service", "update", "--detach=false", "--image", images["v2"], web_service)
    d = project.lbrec("diff")
    assert d.returncode == 1 and f"image {images['v2']} -> {images['v1']}" in d.stdout, _out(d)
    r = _apply(project)
    assert r.returncode == 0, _out(r)
    wait_until(  # Swarm's own update stops the hand-made tasks, with their grace period
        lambda: {t["image"] for t in _tasks(project, "web")} == {images["v1"]},
        60,
        "the hand-made image to be gone: " + _out(r),
    )
    assert len(_pool(project, "web")) == 3
    d = project.lbrec("diff")
    assert d.returncode == 0, _out(d)

    with _proxy(project, listen, admin):
        # Traffic split by weight over the 5 tasks: 3:2 between the backends, every task used.
        seen = Counter(http_request("GET", listen)[1] for _ in range(100))
        assert seen == {"web": 60, "api": 40}, seen

        # A new image, rolled out under load: the new service beside the old, then the old goes.
        old_services = _services(project)
        project.write(_spec(project, listen, admin, images["v2"]))
        with _load(listen, seconds=120, max_requests=40_000) as load:
            r = _apply(project)
        assert r.returncode == 0, _out(r)
        load.check(_out(r))
        print(f"\n[swarm] new image: {load.ok} requests, {len(load.failures)} failed")
        assert {t["image"] for t in _tasks(project)} == {images["v2"]}
        assert not _services(project) & old_services  # every old version service is gone

        # A broken image: Swarm starts it, it exits, lbrec removes it; the old one never moved.
        before = _services(project)
        project.write(_spec(project, listen, admin, images["broken"]))
        with _load(listen, seconds=120, max_requests=40_000) as load:
            r = _apply(project)
        assert r.returncode == 1, _out(r)
        assert "web" in r.stderr + r.stdout and "rolled back" in r.stdout + r.stderr, _out(r)
        load.check(_out(r))
        print(f"[swarm] broken image: exit 1, {load.ok} requests, {len(load.failures)} failed")
        assert _services(project) == before, _out(r)
        assert {t["image"] for t in _tasks(project)} == {images["v2"]}

        # Scale 3 -> 5 -> 1 under load.
        for replicas in (5, 1):
            project.write(_spec(project, listen, admin, images["v2"], replicas=replicas))
            with _load(listen, seconds=120, max_requests=40_000) as load:
                r = _apply(project)
            assert r.returncode == 0, _out(r)
            load.check(_out(r))
            print(f"[swarm] scale to {replicas}: {load.ok} requests, {len(load.failures)} failed")
            assert len(_tasks(project, "web")) == replicas
            assert len(_pool(project, "web")) == replicas

        # A task killed by hand: Swarm replaces it, the next pass routes the new one.
        (victim,) = [t["id"] for t in _tasks(project, "web")]
        _docker("kill", victim)
        wait_until(
            lambda: [t["id"] for t in _tasks(project, "web")] not in ([], [victim]),
            60,
            "Swarm to replace the killed task",
        )
        r = _apply(project)
        assert r.returncode == 0, _out(r)
        (task,) = _tasks(project, "web")
        assert task["id"] != victim
        assert len(_pool(project, "web")) == 1
        assert "web" in {http_request("GET", listen)[1] for _ in range(10)}
