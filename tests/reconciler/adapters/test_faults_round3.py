"""Issue 25 points 5 and 6: the announced edit goes first, a full disk writes whole records or
none with a clear error, and a dead (not yet reaped) pass is not taken for a running canary."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.audit import append_record, read_history
from lbrec.reconciler.adapters.files import atomic_write
from lbrec.reconciler.adapters.lock import WAIT_PREFIX, pid_alive, project_lock
from lbrec.reconciler.core.errors import LbrecError

pytestmark = pytest.mark.timeout(30)


def test_a_short_write_or_a_full_disk_leaves_no_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_record(tmp_path, {"outcome": "deployed", "n": 1})
    real = os.write
    calls = {"n": 0}

    def short_then_full(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real(fd, bytes(data)[:7])  # a short count, as on a nearly full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(LbrecError) as caught:
        append_record(tmp_path, {"outcome": "failed", "n": 2})
    assert "no space left" in caught.value.message.lower()
    assert "audit.jsonl" in caught.value.message
    monkeypatch.setattr(os, "write", real)
    append_record(tmp_path, {"outcome": "in_sync", "n": 3})
    lines = (tmp_path / ".lbrec/audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 3]  # whole records, none glued
    assert [r["n"] for r in read_history(tmp_path, 10)] == [1, 3]


def test_a_record_after_a_torn_line_stands_on_its_own(tmp_path: Path) -> None:
    append_record(tmp_path, {"n": 1})
    with open(tmp_path / ".lbrec/audit.jsonl", "ab") as f:
        f.write(b'{"n": 2, "outc')  # a crash mid-write, from before
    append_record(tmp_path, {"n": 3})
    assert [r["n"] for r in read_history(tmp_path, 10)] == [1, 3]


def test_atomic_write_on_a_full_disk_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "desired-state.yaml"
    target.write_text("old\n")

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(LbrecError) as caught:
        atomic_write(target, "new\n")
    assert str(target) in caught.value.message and "no space left" in caught.value.message
    assert caught.value.exit_code == 7 and caught.value.transient
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["desired-state.yaml"]  # no temp file


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # exited, not reaped: a zombie
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.01)
    try:
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert pid_alive(os.getpid())


def test_abort_of_a_canary_whose_pass_is_dead_is_refused(tmp_path: Path) -> None:
    from lbrec.reconciler.adapters.rollout_control import read_state, request
    from lbrec.reconciler.core.errors import UsageError

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.3)  # exited, not reaped
    (tmp_path / ".lbrec").mkdir()
    state = {"web": {"state": "judging", "percent": 5, "steps": [5, 100], "pid": child.pid}}
    (tmp_path / ".lbrec/rollout.json").write_text(json.dumps(state))
    try:
        assert read_state(tmp_path)["web"]["alive"] is False
        with pytest.raises(UsageError):
            request(tmp_path, None, "abort")
    finally:
        child.wait()


def test_a_waiting_apply_lets_the_announced_edit_go_first(tmp_path: Path) -> None:
    """The lock is free now, but an edit announced itself first: a pass that is not an edit
    waits until the edit has had the lock (flock alone is first come)."""
    editor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        marker = tmp_path / f"{WAIT_PREFIX}{editor.pid}"
        marker.write_text(f"pid {editor.pid} (lbrec add)\n")
        order: list[str] = []

        def apply() -> None:
            with project_lock(tmp_path, command="lbrec apply", timeout=10, poll=0.02):
                order.append("apply")

        thread = threading.Thread(target=apply)
        thread.start()
        time.sleep(0.5)
        assert order == []  # it waits for the announced edit
        order.append("edit")
        marker.unlink()  # the edit took the lock (and left it)
        thread.join(5)
        assert order == ["edit", "apply"]
    finally:
        editor.kill()
        editor.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
def test_lbrec_add_on_a_full_disk_exits_7_naming_the_file(tmp_path: Path) -> None:
    """A real full file system (a 64 KiB tmpfs the test mounts and removes): a clear error, the
    documented exit code, no traceback, the file as it was and no half record."""
    from lbrec.reconciler.commands.cli import main

    from ..fakes import FakeDocker

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        spec = disk / "desired-state.yaml"
        spec.write_text("backends:\n  - {name: a, port: 9101, weight: 1}\n")
        append_record(disk, {"outcome": "deployed"})
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # fill it up
            while True:
                os.write(fd, b"x" * 512)
        os.close(fd)
        out = subprocess.run(
            [sys.executable, "-c", _ADD, str(spec)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 7, out.stderr
        assert "no space left" in out.stderr and str(spec) in out.stderr
        assert "Traceback" not in out.stderr
        assert spec.read_text() == "backends:\n  - {name: a, port: 9101, weight: 1}\n"
        for line in (disk / ".lbrec/audit.jsonl").read_text().splitlines():
            json.loads(line)  # whole records only
        del main, FakeDocker
    finally:
        subprocess.run(["umount", str(disk)], check=True)


_ADD = """
import sys
from lbrec.reconciler.commands.cli import main
from tests.reconciler.fakes import FakeDocker
sys.exit(main(["add", "b:9102:1", "--no-apply", "-f", sys.argv[1]], docker=FakeDocker))
"""
