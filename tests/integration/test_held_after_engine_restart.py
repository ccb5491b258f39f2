"""A held backend after an engine restart, on an engine of the test's own (issue 25, point 2).

A canary whose new version fails is rolled back and held (`.lbrec/rolled-back.json`); its old
version keeps serving. The engine is then stopped and started again while no lbrec runs:
without live-restore the containers stop with it and come back on other host ports (Docker
hands them out again from 32768 up). `lbrec up` is started in that folder. Held means "the old
instances keep serving", wherever they listen now: they must be routed at their new ports
(before the fix `/-/pool` stayed `[]`, every request got 503, and `lbrec status` said in sync).

The engine is a ``dockerd`` of the test's own (tests/support/netns_engine.py), never the
machine's; traffic goes only to 127.0.0.1 (the proxy) and the namespace's 198.18.X address.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.netns_engine import Node

from .conftest import (
    BASE_IMAGE,
    demo_folder,
    free_ports,
    lbrec_env,
    run_lbrec,
    start_lbrec,
    wait_until,
)

pytestmark = [pytest.mark.netns_engine, pytest.mark.slow]

# The canary's new version (v2) exits at once; v1's instances are the only web containers that
# run, so an answer of web (X-Backend) at one of their URLs is the old version's.
WEB = (
    "{name: web, port: 8000, replicas: 2, %s, rollout: {strategy: canary, steps: [50, 100],"
    " interval: 2s, min_healthy_time: 0.5s, healthy_deadline: 20s, drain_timeout: 2s}}"
)
GOOD = WEB % "env: {VERSION: v1}"
BROKEN = WEB % (
    "env: {VERSION: v2}, command: [python3, -c, \"print('boom'); raise SystemExit(3)\"]"
)


@dataclass
class Deploy:
    folder: Path
    name: str
    listen: int
    admin: int
    env: dict[str, str]
    node: Node

    def write(self, backend: str) -> None:
        (self.folder / "desired-state.yaml").write_text(
            f"project: {self.name}\n"
            f"listen: 127.0.0.1:{self.listen}\n"
            f"admin: 127.0.0.1:{self.admin}\n"
            f"publish_host: {self.node.address}\n"
            "health: {interval: 0.5, timeout: 1.0, rise: 1, fall: 2}\n"
            f"backends:\n  - {backend}\n"
        )

    def lbrec(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_lbrec(self.folder, self.env, *args, timeout=timeout)

    def web(self) -> dict[str, str]:
        """container id -> its published URL, for web's running instances on the engine."""
        ids = self.node.docker(
            "ps", "-q", "--no-trunc", "--filter", f"label=lbrec.project={self.name}"
        ).split()
        out: dict[str, str] = {}
        if not ids:
            return out
        for c in json.loads(self.node.docker("inspect", *ids, check=False) or "[]"):
            labels = c["Config"]["Labels"] or {}
            if labels.get("lbrec.backend") != "web" or not c["State"]["Running"]:
                continue
            for bindings in (c["NetworkSettings"]["Ports"] or {}).values():
                for b in bindings or ():
                    out[c["Id"]] = f"http://{b['HostIp']}:{b['HostPort']}"
        return out

    def pool_file(self) -> set[tuple[str, str]]:
        data = json.loads((self.folder / "config/backends.json").read_text())
        return {(str(e["name"]), str(e["url"])) for e in data["backends"] if not e.get("frozen")}

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _get(port: int, path: str = "/") -> tuple[int, str, bytes]:
    """(status, X-Backend, body) of one request to 127.0.0.1:port on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, response.getheader("X-Backend") or "", body
    finally:
        conn.close()


def _answers(port: int, count: int = 10) -> Counter[tuple[int, str]]:
    out: Counter[tuple[int, str]] = Counter()
    for _ in range(count):
        status, who, _body = _get(port)
        out[(status, who)] += 1
    return out


@pytest.fixture
def deploy(engine: Node, tmp_path: Path) -> Deploy:
    folder = demo_folder(tmp_path / "deploy")
    env = engine.env(lbrec_env())
    listen, admin = free_ports(2)
    name = f"t25h-{uuid.uuid4().hex[:6]}"
    return Deploy(folder, name, listen, admin, env, engine)


def _stop_up(deploy: Deploy, proc: subprocess.Popen[bytes]) -> None:
    """Our `lbrec up` (SIGINT, by pid), then any proxy process it left (by the pids it wrote)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads((deploy.folder / ".lbrec/proxy.pids").read_text())
        for pid in data["proxies"]:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
                if b"lbrec" in cmdline or b"proxy" in cmdline:
                    os.kill(int(pid), signal.SIGTERM)


def test_a_held_backend_is_routed_at_its_new_ports_after_an_engine_restart(
    deploy: Deploy,
) -> None:
    node = deploy.node
    # A container of the test's own holds the first host ports while web's instances start,
    # so that after the restart (the allocator starts again at 32768) they listen elsewhere.
    holder = f"{deploy.name}-holder"
    ports = [arg for port in (9, 10) for arg in ("-p", f"{node.address}::{port}")]
    node.docker("run", "-d", "--name", holder, *ports, BASE_IMAGE, "sleep", "600")
    deploy.write(GOOD)
    first = deploy.lbrec("apply")
    assert first.returncode == 0, _out(first)
    node.docker("rm", "-f", holder)
    before = deploy.web()
    assert len(before) == 2, before
    assert deploy.pool_file() == {("web", url) for url in before.values()}

    # The canary's new version exits: rolled back, remembered, held; the old one untouched.
    deploy.write(BROKEN)
    broken = deploy.lbrec("apply")
    assert broken.returncode == 1, _out(broken)
    assert "rolled back" in broken.stdout and "rolled_back=1" in broken.stdout, _out(broken)
    held = json.loads((deploy.folder / ".lbrec/rolled-back.json").read_text())
    assert "web" in held, held
    assert deploy.web() == before

    # The engine restarts while no lbrec runs: web's containers come back on other ports.
    stop_s = node.stop()
    start_s = node.start()
    wait_until(lambda: set(deploy.web()) == set(before), 60, "web's old instances to run again")
    moved = deploy.web()
    assert set(moved.values()).isdisjoint(before.values()), (before, moved)  # the premise

    began = time.monotonic()
    up = start_lbrec(deploy.folder, deploy.env, "up.log", "up")
    try:
        wait_until(
            lambda: _answers(deploy.listen) == {(200, "web"): 10},
            60,
            "the held backend's old version to answer through the proxy (pool was [], 503)",
            log=deploy.folder / "up.log",
        )
        served_s = time.monotonic() - began
        assert up.poll() is None, deploy.log("up.log")

        # The proxy routes exactly the old instances, at the ports they listen on now.
        status, _who, body = _get(deploy.admin, "/-/pool")
        assert status == 200, body
        pool = json.loads(body)["backends"]
        assert {(b["name"], b["url"]) for b in pool} == {("web", u) for u in moved.values()}, pool
        assert all(b["in_rotation"] for b in pool), pool
        assert deploy.pool_file() == {("web", u) for u in moved.values()}
        by_url = {url: cid for cid, url in moved.items()}
        entries = json.loads((deploy.folder / "config/backends.json").read_text())["backends"]
        assert all(by_url[e["url"]].startswith(e.get("container") or "-") for e in entries), (
            entries  # each entry names the container that listens at its URL now
        )
        assert _answers(deploy.listen, 20) == {(200, "web"): 20}
        _status, _who, body = _get(deploy.admin, "/-/pool")
        answered = {b["url"]: b["requests"] for b in json.loads(body)["backends"]}
        assert set(answered) == set(moved.values()) and all(answered.values()), answered

        # Still held (not rolled out again) and `lbrec status` is true about what is routed.
        assert "web" in json.loads((deploy.folder / ".lbrec/rolled-back.json").read_text())
        assert deploy.web() == moved
        shown = deploy.lbrec("status", "-o", "json")
        assert shown.returncode == 0, _out(shown)
        (row,) = [r for r in json.loads(shown.stdout)["backends"] if r["backend"] == "web"]
        assert row["routed_weight"] is not None, row
        assert {i["endpoint"] for i in row["instances"] if i["routed"]} == {
            u.removeprefix("http://") for u in moved.values()
        }, row
    finally:
        _stop_up(deploy, up)
    print(
        f"\nheld after engine restart: engine stop {stop_s:.2f} s, start {start_s:.2f} s; "
        f"old version served through `lbrec up` {served_s:.2f} s after it started"
    )
