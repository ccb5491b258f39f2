"""The whole reconciler lifecycle against the real Docker engine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import Project, free_ports, spec_text

pytestmark = pytest.mark.docker


def _get(url: str, path: str = "/") -> tuple[str, str]:
    with urllib.request.urlopen(f"{url}{path}", timeout=5) as response:
        return response.headers["X-Backend"], response.read().decode()


def test_lifecycle_init_add_reweight_remove_idempotent(project: Project) -> None:
    p1, p2, p3 = free_ports(3)
    project.write(f"# keep me\nproject: {project.name}\nbackends: []\n")
    r = project.lbrec("init", f"b1:{p1}:2", f"b2:{p2}:3", check=True)
    assert f"+ b1 port {p1} weight 2" in r.stdout
    assert "ok=2  changed=2  removed=0  failed=0" in r.stdout
    assert "# keep me" in project.spec.read_text()
    assert project.routed() == {"b1": 2, "b2": 3}
    assert _get(project.url("b1")) == ("b1", "Hello from b1\n")
    assert _get(project.url("b2"))[0] == "b2"
    before = project.containers()
    assert {k: v["state"] for k, v in before.items()} == {"b1": "running", "b2": "running"}

    # Idempotent: nothing planned, nothing recreated (same ids, same start times).
    project.assert_in_sync()
    r = project.lbrec("apply", "-f", "desired-state.yaml", check=True)
    assert "No changes" in r.stdout
    assert project.containers() == before

    # add one backend and reweight another: the reweight restarts nothing.
    r = project.lbrec("add", f"b3:{p3}:1", f"b1:{p1}:5", check=True)
    assert "~ b1 weight 2 -> 5" in r.stdout and f"+ b3 port {p3} weight 1" in r.stdout
    after = project.containers()
    assert after["b1"] == before["b1"] and after["b2"] == before["b2"]
    assert after["b3"]["state"] == "running"
    assert project.routed() == {"b1": 5, "b2": 3, "b3": 1}

    # diff exits 1 with pending changes and changes nothing; apply --check is the same.
    project.write(
        project.spec.read_text().replace(f"port: {p2}, weight: 3", f"port: {p2}, weight: 7")
    )
    snap = project.snapshot()
    d = project.lbrec("diff")
    c = project.lbrec("apply", "--check")
    assert (d.returncode, c.returncode) == (1, 1)
    assert d.stdout == c.stdout and "~ b2 weight 3 -> 7" in d.stdout
    assert project.snapshot() == snap
    j = json.loads(project.lbrec("diff", "-o", "json").stdout)
    assert [a["action"] for a in j["actions"] if a["backend"] == "b2"] == ["reweight"]
    project.lbrec("apply", check=True)
    assert project.routed()["b2"] == 7

    # remove by port: out of the pool first, then the container goes.
    r = project.lbrec("remove", str(p2), check=True)
    assert "- b2 (not in desired state)" in r.stdout and "removed=1" in r.stdout
    assert set(project.containers()) == {"b1", "b3"}
    assert project.routed() == {"b1": 5, "b3": 1}
    project.assert_in_sync()


def test_drift_is_repaired(project: Project) -> None:
    (p1, p2) = free_ports(2)
    project.write(spec_text(project.name, [("d1", p1, 1), ("d2", p2, 1)]))
    # -o json: stdout is the report alone; the image build's progress goes to stderr
    r = project.lbrec("apply", "-o", "json", check=True)
    assert json.loads(r.stdout)["in_sync"] is False
    assert f"building {project.name}-backend:" in r.stderr and "  | " in r.stderr, r.stderr
    ids = project.containers()
    subprocess.run(["docker", "stop", "-t", "1", ids["d1"]["id"]], check=True, capture_output=True)
    subprocess.run(["docker", "rm", "-f", ids["d2"]["id"]], check=True, capture_output=True)
    d = project.lbrec("diff")
    assert d.returncode == 1
    assert "~ d1 start (container exited)" in d.stdout and f"+ d2 port {p2}" in d.stdout
    project.lbrec("apply", check=True)
    now = project.containers()
    assert now["d1"]["id"] == ids["d1"]["id"] and now["d1"]["state"] == "running"
    assert now["d2"]["id"] != ids["d2"]["id"] and now["d2"]["state"] == "running"
    project.assert_in_sync()


def test_port_change_replaces_with_reason(project: Project) -> None:
    p1, p2 = free_ports(2)
    project.write(spec_text(project.name, [("r1", p1, 1)]))
    project.lbrec("apply", check=True)
    old = project.containers()["r1"]["id"]
    old_url = project.url("r1")
    project.write(spec_text(project.name, [("r1", p2, 1)]))
    r = project.lbrec("apply", check=True)
    assert f"-/+ r1 (replace 1 instance, start first: port {p1} -> {p2})" in r.stdout
    assert project.containers()["r1"]["id"] != old
    assert _get(project.url("r1"))[0] == "r1"
    backends: list[dict[str, Any]] = project.pool["backends"]  # type: ignore[assignment]
    (entry,) = backends
    assert entry["name"] == "r1" and entry["weight"] == 1
    assert entry["url"] != old_url and entry["instance"].startswith(f"{project.name}-r1-")
    inspect = subprocess.run(
        ["docker", "port", project.containers()["r1"]["id"], f"{p2}/tcp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert f"http://{inspect[0]}" == entry["url"]  # routed where Docker published it


def test_failing_build_loses_nothing(project: Project) -> None:
    (p1,) = free_ports(1)
    project.write(spec_text(project.name, [("f1", p1, 1)]))
    project.lbrec("apply", check=True)
    before = project.containers()
    pool_before = project.pool
    project.write(
        spec_text(project.name, [("f1", p1, 1)], extra="base_image: lbrec-no-such-image:none\n")
    )
    r = project.lbrec("apply")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED f1" in r.stdout and "failed=1" in r.stdout
    assert project.containers() == before  # the old container still serves
    assert project.pool["backends"] == pool_before["backends"]
    assert _get(project.url("f1"))[0] == "f1"
    # fixing the file converges
    project.write(spec_text(project.name, [("f1", p1, 1)]))
    assert project.lbrec("apply").returncode == 0
    project.assert_in_sync()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["add", "bad"], "expected NAME:PORT:WEIGHT"),
        (["add", "Upper:9999:1"], "DNS label"),
        (["add", "x1:9999:5000"], "less than or equal to 1000"),
        (["add", "x1:{p1}:1"], "already used by backend 'a1'"),
        (["remove", "nope"], "no backend named or on port 'nope'"),
        (["init", "x:70000:1"], "less than or equal to 65535"),
        (["apply", "-f", "broken.yaml"], "line 3 column"),
        (["apply", "-f", "unknown-key.yaml"], "wieght: unknown key"),
        (["apply", "-f", "missing.yaml"], "no such file"),
    ],
)
def test_bad_input_changes_nothing(project: Project, args: list[str], needle: str) -> None:
    (p1,) = free_ports(1)
    project.write(spec_text(project.name, [("a1", p1, 1)]))
    project.lbrec("apply", check=True)
    (project.folder / "broken.yaml").write_text("backends:\n  - {name: a1\n  port: 1}\n")
    (project.folder / "unknown-key.yaml").write_text(
        f"project: {project.name}\nbackends:\n  - {{name: a1, port: {p1}, wieght: 2}}\n"
    )
    snap, ids = project.snapshot(), project.containers()
    r = project.lbrec(*[a.format(p1=p1) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3
    assert project.snapshot() == snap
    assert project.containers() == ids


def test_a_port_taken_on_the_host_is_no_conflict(project: Project) -> None:
    """`port` is the application's port in its container; the host port is Docker's pick."""
    p1, p2 = free_ports(2)
    project.write(spec_text(project.name, [("u1", p1, 1)]))
    project.lbrec("apply", check=True)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", p2))
        squatter.listen()
        project.lbrec("add", f"u2:{p2}:1", check=True)
    assert _get(project.url("u2"))[0] == "u2"


def test_concurrent_adds_both_land(project: Project) -> None:
    p1, p2, p3 = free_ports(3)
    project.write(spec_text(project.name, [("c1", p1, 1)]))
    project.lbrec("apply", check=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lbrec", "add", arg],
            cwd=project.folder,
            env=project.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for arg in (f"c2:{p2}:2", f"c3:{p3}:3")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert any("waiting for the lock" in err for _out, err in outs)
    text = project.spec.read_text()
    assert f"c2, port: {p2}" in text and f"c3, port: {p3}" in text
    assert set(project.containers()) == {"c1", "c2", "c3"}
    assert project.routed() == {"c1": 1, "c2": 2, "c3": 3}


def test_no_engine_is_one_clear_line(project: Project) -> None:
    (p1,) = free_ports(1)
    project.write(spec_text(project.name, [("n1", p1, 1)]))
    project.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    r = project.lbrec("apply")
    assert r.returncode == 3
    assert "cannot reach the Docker engine" in r.stderr and "Traceback" not in r.stderr
    assert not (project.folder / "config/backends.json").exists()


def test_status_lists_backends(project: Project) -> None:
    (p1,) = free_ports(1)
    project.write(spec_text(project.name, [("s1", p1, 4)]))
    project.lbrec("apply", check=True)
    r = project.lbrec("status", check=True)
    assert "s1" in r.stdout and "running" in r.stdout
    data = json.loads(project.lbrec("status", "-o", "json", check=True).stdout)
    assert data["backends"][0]["weight"] == 4 and data["backends"][0]["routed_weight"] == 4


def test_no_compose_v2_is_one_clear_line(project: Project, tmp_path: Path) -> None:
    """Compose is a CLI plugin found through DOCKER_CONFIG; an empty one hides a per-user
    install such as scripts/docker-dev.sh makes."""
    empty = tmp_path / "docker-config"
    empty.mkdir()
    project.env["DOCKER_CONFIG"] = str(empty)
    probe = subprocess.run(
        ["docker", "compose", "version"], env=project.env, capture_output=True, check=False
    )
    if probe.returncode == 0:
        pytest.skip("Compose v2 is installed system-wide here: it cannot be hidden")
    (p1,) = free_ports(1)
    project.write(spec_text(project.name, [("m1", p1, 1)]))
    r = project.lbrec("apply")
    assert r.returncode == 3
    assert "Docker Compose v2 is missing" in r.stderr and "Traceback" not in r.stderr
    assert not (project.folder / "config/backends.json").exists()
