"""DockerEvents with a stand-in ``docker`` on PATH: a stream that ends and comes back asks for
a pass at once (events during the outage are lost), and the child dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.docker_events import DockerEvents


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docker events`` that fails the first time (engine down), then streams one event and
    stays up (engine back)."""
    state = tmp_path / "calls"
    script = tmp_path / "docker"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo x >> {state}
            if [ "$(wc -l < {state})" -le 1 ]; then exit 1; fi
            echo "die b1"
            exec sleep 30
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return state


def test_a_stream_that_comes_back_asks_for_a_pass(fake_docker: Path) -> None:
    seen: list[str] = []
    done = threading.Event()

    def on_event(what: str) -> None:
        seen.append(what)
        if what.startswith("reconnected"):
            done.set()

    events = DockerEvents("demo", on_event)
    events.start()
    try:
        assert done.wait(15), seen
    finally:
        events.stop()
    assert "die b1" in seen and seen[-1] == "reconnected events-stream"


def test_the_events_child_dies_with_its_parent(fake_docker: Path, tmp_path: Path) -> None:
    """A process running DockerEvents is killed with SIGKILL: its `docker events` goes too."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from lbrec.reconciler.adapters.docker_events import DockerEvents\n"
            "DockerEvents('demo', print).start()\n"
            "time.sleep(60)\n",
        ],
        cwd=Path(__file__).parents[3],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        sleepers: list[int] = []
        while time.monotonic() < deadline and not sleepers:
            time.sleep(0.2)
            sleepers = _descendants_running(child.pid, b"sleep")
        assert sleepers, "the stand-in docker events never started"
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in sleepers):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in sleepers), "orphaned docker events"
    finally:
        if child.poll() is None:
            child.kill()


def _descendants_running(root: int, name: bytes) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if name in cmdline and _has_ancestor(ppid, root):
            found.append(int(entry.name))
    return found


def _has_ancestor(pid: int, root: int) -> bool:
    for _ in range(10):
        if pid == root:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return False
    return False


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_parse_inspect_is_lbrecs_view_of_the_json() -> None:
    import json

    from lbrec.reconciler.adapters.docker_inspect import parse_inspect

    doc = [
        {
            "Id": "b" * 64,
            "Name": "/demo-web-1",
            "Config": {"Image": "demo-web", "Labels": {"lbrec.backend": "web", "x": "1"}},
            "State": {
                "Status": "running",
                "StartedAt": "2026-12-02T10:00:00.5Z",
                "Health": {"Status": "healthy"},
            },
        },
        {"Id": "c" * 64, "Name": "/other", "Config": {"Labels": {}}, "State": {}},
        {
            "Id": "a" * 64,
            "Name": "/demo-lb",
            "Config": {"Image": "lb", "Labels": {"lbrec.role": "lb"}},
            "State": {"Status": "created", "StartedAt": "0001-01-01T00:00:00Z"},
        },
    ]
    lb, web = parse_inspect(json.dumps(doc))
    assert (web.backend, web.name, web.state, web.health) == (
        "web",
        "demo-web-1",
        "running",
        "healthy",
    )
    assert web.started_at == "2026-12-02T10:00:00.5Z" and web.labels["x"] == "1"
    assert (lb.backend, lb.role, lb.started_at, lb.health) == ("lb", "lb", None, None)


def test_a_stream_that_was_up_and_ends_freezes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: the end of a stream that was up calls ``on_lost`` at once (the pool is
    frozen before the engine can hand its ports to others); a stream that never came up (the
    engine unreachable from the start) does not."""
    state = tmp_path / "calls"
    script = tmp_path / "docker"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo x >> {state}
            n=$(wc -l < {state})
            if [ "$n" -le 1 ]; then exit 1; fi
            if [ "$n" -le 2 ]; then sleep 1; exit 0; fi
            exec sleep 30
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    lost: list[float] = []
    seen: list[str] = []
    events = DockerEvents("demo", seen.append, on_lost=lambda: lost.append(time.monotonic()))
    events.start()
    try:
        deadline = time.monotonic() + 15
        while not (lost and seen) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        events.stop()
    assert len(lost) == 1  # the second stream (up 1 s) ended; the first never came up
    assert seen[0] == "reconnected events-stream"  # the second stream: the engine back
