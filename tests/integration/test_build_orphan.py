"""Issue 25 point 6: a `kill -9` of `lbrec apply` while `docker compose build` runs leaves no
build behind (it ran on, with ppid 1, beside the next lbrec building the same tag).

The backend is built from a Dockerfile with a slow step (``RUN ... sleep 60``) FROM the offline
base image; the step echoes the project's name, so that every process of the build (the
``docker compose build`` client, its Compose plugin and the step itself, run by the engine) is
found in /proc by that name. Everything here is our own: the Compose project (``t25o-...``), its
folder, the two ``lbrec apply`` children (killed by pid) and, should one be left, a build started
by them (stopped by pid in the teardown).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import BASE_IMAGE, free_ports, lbrec_env, remove_project, start_lbrec, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GONE_WITHIN = 10.0  # seconds after the kill for every process of the build to end


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    started: int  # clock ticks since boot: with the pid, one process
    cmdline: str


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid``, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # comm may hold spaces and parentheses
    return int(fields[1]), fields[0], int(fields[19])


def _processes() -> dict[int, _Proc]:
    """Every live process (zombies have ended) with its command line."""
    out: dict[int, _Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (stat := _stat(int(entry))) is None or stat[1] == "Z":
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        out[int(entry)] = _Proc(int(entry), stat[0], stat[2], cmdline)
    return out


def _of_build(name: str) -> dict[int, _Proc]:
    """The processes of project ``name``'s build: the ``docker compose ... build`` client and
    its plugin (``--project-name NAME``), and the slow step (``sh -c echo NAME ...``)."""
    return {pid: p for pid, p in _processes().items() if name in p.cmdline}


def _steps(procs: dict[int, _Proc]) -> list[_Proc]:
    return [p for p in procs.values() if "sleep 60" in p.cmdline and "compose" not in p.cmdline]


def _composes(procs: dict[int, _Proc]) -> list[_Proc]:
    return [p for p in procs.values() if "compose" in p.cmdline and " build" in p.cmdline]


def _descends_from(proc: _Proc, ancestor: int, table: dict[int, _Proc]) -> bool:
    seen: set[int] = set()
    while proc.pid not in seen:
        if proc.ppid == ancestor:
            return True
        seen.add(proc.pid)
        parent = table.get(proc.ppid)
        if parent is None:
            return False
        proc = parent
    return False


def _alive(proc: _Proc) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.started and stat[1] != "Z"


@dataclass
class _Deploy:
    folder: Path
    name: str
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]]

    def apply(self, log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.folder / log_name
        proc = start_lbrec(self.folder, self.env, log_name, "apply")
        self.started.append(proc)
        return proc, log_path


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[_Deploy]:
    name = f"t25o-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "deploy"
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        f"RUN echo {name} building && sleep 60\n"
        'CMD ["python3", "-m", "http.server", "8080"]\n'
    )
    listen, admin = free_ports(2)
    (folder / "desired-state.yaml").write_text(
        f"project: {name}\n"
        f"listen: 127.0.0.1:{listen}\n"
        f"admin: 127.0.0.1:{admin}\n"
        "backends:\n"
        "  - {name: b1, port: 8080, build: {context: ./app}}\n"
    )
    env = lbrec_env()
    found = _Deploy(folder=folder, name=name, env=env, started=[])
    try:
        yield found
    finally:
        for proc in found.started:  # our own children, by pid
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        # A build our apply left behind (the bug): its client, by pid, so the engine cancels it.
        for left in _composes(_of_build(name)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(left.pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not _of_build(name), 30, "the left build to end")
        remove_project(name)


def _building(deploy: _Deploy, apply: subprocess.Popen[bytes], log: Path) -> dict[int, _Proc]:
    """Wait for the slow step of ``apply``'s build to run; the build's processes then."""
    wait_until(
        lambda: bool(_steps(_of_build(deploy.name))) or apply.poll() is not None,
        180,
        "the build's slow step to run",
        log=log,
    )
    assert apply.poll() is None, log.read_text()
    return _of_build(deploy.name)


def _kill_9(apply: subprocess.Popen[bytes], build: dict[int, _Proc]) -> tuple[float, list[str]]:
    """``kill -9`` of ``apply`` (our child); (seconds until its build ended, what is left)."""
    apply.send_signal(signal.SIGKILL)
    assert apply.wait(timeout=10) == -signal.SIGKILL
    killed = time.monotonic()
    while time.monotonic() - killed < GONE_WITHIN and any(_alive(p) for p in build.values()):
        time.sleep(0.1)
    left = [
        f"{p.pid} (ppid {stat[0]}) {p.cmdline}"
        for p in build.values()
        if _alive(p) and (stat := _stat(p.pid)) is not None
    ]
    return time.monotonic() - killed, left


def test_kill_9_of_apply_during_a_build_leaves_no_build_running(deploy: _Deploy) -> None:
    first, first_log = deploy.apply("apply-1.log")
    build = _building(deploy, first, first_log)
    table = _processes()
    clients = _composes(build)
    assert clients, f"no `docker compose build` found: {build}"
    assert all(_descends_from(c, first.pid, table) for c in clients), (clients, first.pid)
    assert len(_steps(build)) == 1, build

    took, left = _kill_9(first, build)
    print(
        f"\n[faults] kill -9 of lbrec apply mid-build: {len(build)} build process(es) "
        f"{sorted(p.cmdline[:60] for p in build.values())}; "
        f"all ended {took:.2f}s after the kill; left: {left}"
    )
    assert left == [], f"left running {GONE_WITHIN:g}s after the kill: {left}"
    assert _of_build(deploy.name) == {}, _of_build(deploy.name)

    # The next apply builds the same tag: its build is the only one.
    second, second_log = deploy.apply("apply-2.log")
    build = _building(deploy, second, second_log)
    table = _processes()
    strangers = [c for c in _composes(build) if not _descends_from(c, second.pid, table)]
    assert strangers == [], f"a build beside the next apply's: {strangers}"
    assert len(_steps(build)) == 1, f"the same tag built twice at once: {build}"
    _, left = _kill_9(second, build)  # the same again, and our teardown
    assert left == [], f"left running {GONE_WITHIN:g}s after the kill: {left}"
