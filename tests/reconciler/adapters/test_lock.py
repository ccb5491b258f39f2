"""The project lock: one holder at a time across processes, a clear timeout, never stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.lock import LOCK_FILE, project_lock
from lbrec.reconciler.core.errors import LockTimeout

ROOT = Path(__file__).resolve().parents[3]

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lbrec.reconciler.adapters.lock import project_lock
    with project_lock(Path(sys.argv[1]), command="lbrec apply", timeout=10):
        print("locked", flush=True)
        if sys.argv[2] == "stdin":
            sys.stdin.readline()
        else:
            time.sleep(float(sys.argv[2]))
    print("released", flush=True)
    """
)

WAITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lbrec.reconciler.adapters.lock import project_lock
    start = time.monotonic()
    with project_lock(
        Path(sys.argv[1]),
        command="lbrec add",
        timeout=10,
        on_wait=lambda msg: print("wait:", msg, flush=True),
        poll=0.02,
    ):
        print(f"locked after {time.monotonic() - start:.2f}", flush=True)
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock until its stdin gets a line (or it is killed)."""
    proc = _spawn(HOLDER, str(tmp_path), "stdin")
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n", proc.stderr.read() if proc.stderr else ""
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=5)


def test_uncontended_lock_records_the_holder(tmp_path: Path) -> None:
    with project_lock(tmp_path, command="lbrec apply", timeout=1):
        text = (tmp_path / LOCK_FILE).read_text()
        assert text == f"pid {os.getpid()} (lbrec apply)\n"
    # Taken again at once: released on exit from the block.
    with project_lock(tmp_path, command="lbrec diff", timeout=0):
        assert (tmp_path / LOCK_FILE).read_text() == f"pid {os.getpid()} (lbrec diff)\n"


def test_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), project_lock(tmp_path, command="x", timeout=1):
        raise RuntimeError("boom")
    with project_lock(tmp_path, command="y", timeout=0):
        pass


def test_waits_for_another_process_then_gets_the_lock(tmp_path: Path) -> None:
    holder = _spawn(HOLDER, str(tmp_path), "0.6")
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    messages: list[str] = []
    start = time.monotonic()
    with project_lock(
        tmp_path, command="lbrec add", timeout=10, on_wait=messages.append, poll=0.02
    ):
        waited = time.monotonic() - start
        assert holder.wait(timeout=5) == 0  # it has finished: we hold the lock now
    assert waited >= 0.3
    assert messages == [
        f"waiting for the lock on {tmp_path / LOCK_FILE} held by pid {holder.pid} (lbrec apply)"
    ]


def test_second_process_waits_until_the_first_exits(tmp_path: Path) -> None:
    with project_lock(tmp_path, command="lbrec apply", timeout=1):
        waiter = _spawn(WAITER, str(tmp_path))
        assert waiter.stdout is not None
        line = waiter.stdout.readline()
        assert line == (
            f"wait: waiting for the lock on {tmp_path / LOCK_FILE} held by pid {os.getpid()}"
            " (lbrec apply)\n"
        )
        time.sleep(0.2)
        assert waiter.poll() is None  # still waiting while we hold it
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0, err
    assert out.startswith("locked after ")


def test_times_out_naming_the_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    messages: list[str] = []
    start = time.monotonic()
    with (
        pytest.raises(LockTimeout) as info,
        project_lock(
            tmp_path, command="lbrec add", timeout=0.3, on_wait=messages.append, poll=0.05
        ),
    ):
        pytest.fail("must not get the lock")
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 3
    assert str(info.value) == (
        f"{tmp_path / LOCK_FILE}: still locked by pid {holder.pid} (lbrec apply) after 0.3s"
    )
    assert info.value.hint is not None and "--lock-timeout" in info.value.hint
    assert info.value.exit_code == 4
    assert len(messages) == 1  # told once, not on every poll


def test_zero_timeout_tries_once(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    start = time.monotonic()
    with pytest.raises(LockTimeout), project_lock(tmp_path, command="x", timeout=0):
        pass
    assert time.monotonic() - start < 1


def test_released_when_the_holder_is_killed(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    with pytest.raises(LockTimeout), project_lock(tmp_path, command="x", timeout=0):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    assert holder.wait(timeout=5) == -signal.SIGKILL
    # No stale lock: the kernel dropped it with the process, although the file still names it.
    assert (tmp_path / LOCK_FILE).read_text() == f"pid {holder.pid} (lbrec apply)\n"
    start = time.monotonic()
    with project_lock(tmp_path, command="lbrec apply", timeout=2):
        assert time.monotonic() - start < 1
        assert (tmp_path / LOCK_FILE).read_text() == f"pid {os.getpid()} (lbrec apply)\n"


def test_released_when_the_holder_finishes(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    out, _ = holder.communicate(timeout=5)
    assert out == "released\n"
    with project_lock(tmp_path, command="x", timeout=0):
        pass


def test_deleting_the_lock_file_does_not_defeat_the_lock(tmp_path: Path) -> None:
    with project_lock(tmp_path, command="lbrec apply"):
        (tmp_path / ".lbrec.lock").unlink()  # an operator "cleaning up"
        with pytest.raises(LockTimeout), project_lock(tmp_path, command="lbrec add", timeout=0.3):
            pass
    with project_lock(tmp_path, command="lbrec add", timeout=1):
        pass
