"""proxy.mode: container — the load balancer as the `lb` Compose service, on the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Project, free_ports, project_labels

pytestmark = pytest.mark.docker


def _spec(project: Project, listen: int, admin: int, backends: list[tuple[str, int, int]]) -> str:
    lines = [
        f"project: {project.name}",
        f"listen: 127.0.0.1:{listen}",
        f"admin: 127.0.0.1:{admin}",
        "proxy: {mode: container}",
        "backends:",
    ]
    lines += [f"  - {{name: {n}, port: {p}, weight: {w}}}" for n, p, w in backends]
    return "\n".join(lines) + "\n"


def _pool(admin: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/-/pool", timeout=5) as response:
        data: dict[str, object] = json.loads(response.read())
        return data


def _lb(project: Project) -> dict[str, str]:
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            f"label=lbrec.project={project.name}",
            "--filter",
            "label=lbrec.role=lb",
            "--format",
            "{{.ID}} {{.Status}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")[0]
    cid = out.split(" ")[0]
    started = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", cid],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"id": cid, "started": started}


def _assert_least_privilege(cid: str) -> None:
    """Issue 20 finding 2: the lb runs as nobody with no capability, read-only, and cannot gain
    privileges (CapEff 0 inside: no NET_RAW to sniff loopback's admin and webhook tokens)."""
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .}}", cid], capture_output=True, text=True, check=True
    ).stdout
    info = json.loads(out)
    assert info["Config"]["User"] == "65534:65534"
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"]
    status = subprocess.run(
        ["docker", "exec", cid, "cat", "/proc/1/status"], capture_output=True, text=True, check=True
    ).stdout
    caps = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapBnd"], 16) == 0


def test_lb_in_compose_serves_and_reweights_without_restart(project: Project) -> None:
    listen, admin, p1, p2 = free_ports(4)
    project.write(_spec(project, listen, admin, [("a", p1, 1), ("b", p2, 2)]))
    r = project.lbrec("apply", check=True)
    assert "+ lb (load balancer container: no container)" in r.stdout
    compose = (project.folder / "docker-compose.yml").read_text()
    assert "network_mode: host" in compose and "./config:/config:ro" in compose

    seen: Counter[str] = Counter()
    for _ in range(30):
        with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5) as response:
            seen[response.headers["X-Backend"]] += 1
    assert seen == {"a": 10, "b": 20}
    assert _pool(admin)["generation"] == project.pool["generation"]
    _assert_least_privilege(_lb(project)["id"])

    lb = _lb(project)
    project.write(_spec(project, listen, admin, [("a", p1, 3), ("b", p2, 1)]))
    r = project.lbrec("apply", check=True)
    assert "~ a weight 1 -> 3" in r.stdout and "lb" not in r.stdout.split("Plan:")[0].replace(
        "lbrec", ""
    ), r.stdout + "\n" + project_labels(project.name)
    deadline = time.monotonic() + 10
    while _pool(admin)["generation"] != project.pool["generation"]:
        assert time.monotonic() < deadline, "the lb container did not reload backends.json"
        time.sleep(0.2)
    assert _lb(project) == lb  # same container, not restarted
    project.assert_in_sync()

    # Back to host mode: the lb container goes, the backends stay.
    project.write(
        _spec(project, listen, admin, [("a", p1, 3), ("b", p2, 1)]).replace(
            "proxy: {mode: container}\n", ""
        )
    )
    r = project.lbrec("apply", check=True)
    assert "- lb (load balancer container: proxy.mode is host)" in r.stdout
    assert set(project.containers()) == {"a", "b"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_diff_in_container_mode_touches_nothing(project: Project, tmp_path: Path) -> None:
    """`lbrec diff` stages no build context, runs no container, downloads nothing."""
    listen, admin, p1 = free_ports(3)
    project.write(_spec(project, listen, admin, [("c1", p1, 1)]))
    env = dict(project.env, XDG_CACHE_HOME=str(tmp_path / "empty-cache"))  # nothing cached
    before = _tree(project.folder)
    since = str(int(time.time()) - 1)
    result = subprocess.run(
        [sys.executable, "-m", "lbrec", "diff"],
        cwd=project.folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # changes pending: c1 and the lb
    assert "+ lb" in result.stdout and "+ c1" in result.stdout, result.stdout
    assert _tree(project.folder) == before
    assert not (tmp_path / "empty-cache").exists()
    window = ["--since", since, "--until", str(int(time.time()) + 1)]
    fmt = ["--format", "{{json .Actor.Attributes}}"]
    events = subprocess.run(
        [
            "docker",
            "events",
            *window,
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            *fmt,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    # Other tests run beside this one (pytest-xdist): their Compose projects' containers are
    # theirs. What diff could have run (a staging `docker run`, or ours) has no other project.
    created = [
        attributes
        for attributes in map(json.loads, events)
        if attributes.get("com.docker.compose.project", project.name) == project.name
    ]
    assert created == []
