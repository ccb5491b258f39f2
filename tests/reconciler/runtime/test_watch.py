"""The watch loop with a fake reconcile and a real watchdog Observer on tmp_path (no Docker)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lbrec.reconciler.core.errors import ApplyError, DockerUnavailable, PortInUse, SpecError
from lbrec.reconciler.core.plan import Plan
from lbrec.reconciler.core.report import Report
from lbrec.reconciler.core.schedule import Backoff, PassOutcome, Schedule, is_permanent
from lbrec.reconciler.runtime.loop import ControlLoop
from lbrec.reconciler.runtime.watch import watch_loop

pytestmark = pytest.mark.timeout(20)

QUIET = 0.5  # how long "nothing more happens" is observed for


def ok_report() -> Report:
    return Report(plan=Plan(actions=()), check=False)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeReconcile:
    """Records pass times; raises the queued errors first, then returns a clean report."""

    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = list(errors or [])
        self.calls: list[float] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self) -> Report:
        self.calls.append(time.monotonic())
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.errors:
            raise self.errors.pop(0)
        return ok_report()

    @property
    def count(self) -> int:
        return len(self.calls)


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "desired-state.yaml"
    path.write_text("backends: []\n")
    return path


@pytest.fixture
def running() -> Iterator[Callable[[ControlLoop], ControlLoop]]:
    loops: list[ControlLoop] = []

    def start(loop: ControlLoop) -> ControlLoop:
        loops.append(loop)
        loop.start()
        return loop

    yield start
    for loop in loops:
        loop.stop()
        assert loop.join(5), "watch loop did not stop"


def save_by_rename(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_rename_into_place_triggers_one_pass(
    spec: Path, running: Callable[[ControlLoop], ControlLoop]
) -> None:
    fake = FakeReconcile()
    running(watch_loop(spec, fake, resync=None, debounce=0.1))
    wait_until(lambda: fake.count == 1)  # the start pass
    time.sleep(0.2)  # let the observer settle
    save_by_rename(spec, "backends: [{name: a, port: 9001}]\n")
    wait_until(lambda: fake.count == 2)
    time.sleep(QUIET)
    assert fake.count == 2


def test_other_files_in_the_folder_are_ignored(
    spec: Path, running: Callable[[ControlLoop], ControlLoop]
) -> None:
    fake = FakeReconcile()
    running(watch_loop(spec, fake, resync=None, debounce=0.05))
    wait_until(lambda: fake.count == 1)
    (spec.parent / "docker-compose.yml").write_text("x")
    (spec.parent / "desired-state.yaml.bak").write_text("x")
    spec.read_text()  # our own reads (opened/closed-no-write events) are no change
    time.sleep(QUIET)
    assert fake.count == 1


def test_burst_of_writes_merges_into_one_pass(
    spec: Path, running: Callable[[ControlLoop], ControlLoop]
) -> None:
    fake = FakeReconcile()
    running(watch_loop(spec, fake, resync=None, debounce=0.2, max_delay=2.0))
    wait_until(lambda: fake.count == 1)
    for i in range(8):
        spec.write_text(f"# edit {i}\nbackends: []\n")
        time.sleep(0.02)
    wait_until(lambda: fake.count == 2)
    time.sleep(QUIET)
    assert fake.count == 2


def test_events_during_a_pass_cause_exactly_one_more(
    spec: Path, running: Callable[[ControlLoop], ControlLoop]
) -> None:
    fake = FakeReconcile()
    loop = running(watch_loop(spec, fake, resync=None, debounce=0.05))
    wait_until(lambda: fake.count == 1)
    fake.gate, fake.entered = threading.Event(), threading.Event()
    loop.notify("test", immediate=True)
    assert fake.entered.wait(2)  # pass 2 is running and blocked
    for i in range(5):
        save_by_rename(spec, f"# during {i}\n")
        time.sleep(0.02)
    time.sleep(0.3)
    fake.gate.set()
    wait_until(lambda: fake.count == 3)
    time.sleep(QUIET)
    assert fake.count == 3


def test_invalid_file_is_logged_and_waits_for_a_change(
    spec: Path, running: Callable[[ControlLoop], ControlLoop], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbrec.watch")
    fake = FakeReconcile([SpecError("desired-state.yaml: backends[0].port: must be <= 65535")])
    loop = running(watch_loop(spec, fake, resync=0.1, debounce=0.05, backoff=Backoff(0.05, 0.1)))
    wait_until(lambda: fake.count == 1)
    time.sleep(QUIET)  # no retry and no resync while the file stays invalid
    assert fake.count == 1
    assert loop.last_outcome is PassOutcome.PERMANENT
    assert "backends[0].port" in caplog.text and "not applied" in caplog.text
    save_by_rename(spec, "backends: []\n")
    wait_until(lambda: fake.count == 2)
    wait_until(lambda: loop.last_outcome is PassOutcome.OK)
    wait_until(lambda: fake.count >= 3)  # resync resumes once the file is good


def test_apply_error_is_retried_with_backoff(
    spec: Path, running: Callable[[ControlLoop], ControlLoop], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbrec.watch")
    fake = FakeReconcile(
        [
            ApplyError("build failed: boom"),
            DockerUnavailable("cannot reach the Docker engine"),
            ApplyError("build failed: boom"),
        ]
    )
    loop = running(watch_loop(spec, fake, resync=None, backoff=Backoff(0.1, 0.25)))
    # the 4th call is counted as it starts: its outcome is recorded when it returns
    wait_until(lambda: fake.count == 4 and loop.last_outcome is PassOutcome.OK, timeout=5)
    gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.24  # 0.1, 0.2, capped 0.25
    assert "build failed: boom" in caplog.text and "retry in 0.1s" in caplog.text
    time.sleep(0.3)
    assert fake.count == 4  # success resets: no more retries (resync is off)


def test_failed_backend_in_report_is_retried(
    spec: Path, running: Callable[[ControlLoop], ControlLoop]
) -> None:
    from lbrec.reconciler.core.plan import Action, ActionKind
    from lbrec.reconciler.core.report import Outcome

    action = Action(ActionKind.CREATE, "b1")
    failing = Report(
        plan=Plan(actions=(action,)),
        check=False,
        outcomes=(Outcome(action, ok=False, error="b1: unhealthy"),),
    )
    results = [failing, ok_report()]
    calls: list[float] = []

    def reconcile() -> Report:
        calls.append(time.monotonic())
        return results.pop(0) if results else ok_report()

    loop = running(watch_loop(spec, reconcile, resync=None, backoff=Backoff(0.05, 0.05)))
    wait_until(lambda: len(calls) == 2)
    wait_until(lambda: loop.last_outcome is PassOutcome.OK)


def test_periodic_resync_without_events(
    spec: Path, running: Callable[[ControlLoop], ControlLoop]
) -> None:
    fake = FakeReconcile()
    running(watch_loop(spec, fake, resync=0.1))
    wait_until(lambda: fake.count >= 4, timeout=3)


def test_stop_ends_it_promptly(spec: Path) -> None:
    fake = FakeReconcile()
    loop = watch_loop(spec, fake, resync=30)
    loop.start()
    wait_until(lambda: fake.count == 1)
    loop.stop()
    assert loop.join(2)


def test_stop_waits_for_the_pass_in_progress(spec: Path) -> None:
    fake = FakeReconcile()
    fake.gate = threading.Event()
    loop = watch_loop(spec, fake, resync=30)
    loop.start()
    assert fake.entered.wait(2)
    loop.stop()
    assert not loop.join(0.2)
    fake.gate.set()
    assert loop.join(2)
    assert fake.count == 1


# -- the pure schedule ------------------------------------------------------------------


def make_schedule(**kw: float | None) -> Schedule:
    args: dict[str, float | None] = {"resync": 30.0, "debounce": 0.3, "max_delay": 2.0}
    args.update(kw)
    return Schedule(
        resync=args["resync"],
        debounce=args["debounce"] or 0.0,
        max_delay=args["max_delay"] or 0.0,
        backoff=Backoff(1, 60),
        retry_permanent_after=args.get("retry_permanent_after"),
    )


def test_schedule_debounces_and_caps_the_delay() -> None:
    s = make_schedule()
    s.event(10.0, "modified")
    assert s.next_due() is not None and s.next_due().at == pytest.approx(10.3)  # type: ignore[union-attr]
    for t in (10.2, 10.4, 10.6, 10.8, 11.0, 11.2, 11.4, 11.6, 11.8):
        s.event(t, "modified")
    due = s.next_due()
    assert due is not None and due.at == pytest.approx(12.0)  # first event + max_delay
    assert due.reason == "modified"


def test_schedule_dirty_flag_gives_one_more_pass() -> None:
    s = make_schedule()
    s.event(0.0, "start", immediate=True)
    s.begin()
    s.event(0.5, "modified")
    s.event(0.6, "modified")
    s.end(1.0, PassOutcome.OK)
    due = s.next_due()
    assert due is not None and due.reason == "modified" and due.at == pytest.approx(0.9)
    s.begin()
    s.end(2.0, PassOutcome.OK)
    due = s.next_due()
    assert due is not None and (due.reason, due.at) == ("resync", 32.0)


def test_schedule_backoff_doubles_caps_and_resets() -> None:
    s = make_schedule()
    delays = []
    for i in range(9):
        s.begin()
        delays.append(s.end(float(i), PassOutcome.TEMPORARY))
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    s.begin()
    assert s.end(100.0, PassOutcome.OK) is None
    due = s.next_due()
    assert due is not None and (due.reason, due.at) == ("resync", 130.0)


def test_schedule_drift_waits_for_the_backoff_but_an_edit_does_not() -> None:
    """A failed rollout removes its own new container; the docker event of that must not
    start the same broken version again before the backoff, while a new save retries now."""
    s = make_schedule()
    for i in range(3):
        s.begin()
        s.end(float(i), PassOutcome.TEMPORARY)  # third failure at t=2: retry at 2 + 4
    s.event(2.5, "docker destroy web", drift=True)
    due = s.next_due()
    assert due is not None and due.at == pytest.approx(6.0)
    s.event(2.6, "desired-state.yaml modified")
    due = s.next_due()
    assert due is not None and due.at == pytest.approx(2.9)  # the edit: after the debounce
    s.begin()
    s.end(3.0, PassOutcome.OK)
    s.event(4.0, "docker die web", drift=True)  # drift after success: repaired at once
    due = s.next_due()
    assert due is not None and due.at == pytest.approx(4.3)


def test_schedule_permanent_parks_until_an_event() -> None:
    s = make_schedule()
    s.begin()
    s.end(5.0, PassOutcome.PERMANENT)
    assert s.next_due() is None
    s.event(9.0, "moved")
    due = s.next_due()
    assert due is not None and due.reason == "moved"


def test_schedule_permanent_can_retry_on_the_interval() -> None:
    s = make_schedule(retry_permanent_after=30.0)
    s.begin()
    s.end(5.0, PassOutcome.PERMANENT)
    due = s.next_due()
    assert due is not None and due.at == 35.0


@pytest.mark.parametrize(
    ("err", "permanent"),
    [
        (SpecError("bad"), True),
        (PortInUse("taken"), False),
        (ApplyError("boom"), False),
        (DockerUnavailable("down"), False),
    ],
)
def test_error_classes(err: Exception, permanent: bool) -> None:
    assert is_permanent(err) is permanent


def test_the_engines_return_is_never_behind_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25: while the engine was away the passes failed and the back-off grew; its return
    re-reads every port at once (the pool is frozen until then), while a container's drift
    still waits the back-off."""
    from lbrec.reconciler.runtime import watch

    made: list[tuple[Callable[[str], None], object]] = []

    class Events:
        def __init__(self, project: str, on_event: Callable[[str], None], on_lost: object) -> None:
            made.append((on_event, on_lost))

        def start(self) -> None: ...
        def stop(self) -> None: ...

    monkeypatch.setattr(watch, "DockerEvents", Events)
    now = [0.0]
    spec = tmp_path / "desired-state.yaml"
    spec.write_text("project: demo\n")
    loop = watch_loop(spec, ok_report, clock=lambda: now[0], docker_project="demo")
    ((on_event, on_lost),) = made
    assert callable(on_lost)
    schedule = loop._schedule
    for i in range(5):
        schedule.begin()
        schedule.end(float(i), PassOutcome.TEMPORARY)  # the fifth failure: retry at 4 + 16
    now[0] = 5.0
    on_event("die web")
    due = schedule.next_due()
    assert due is not None and due.at == pytest.approx(20.0)  # drift: behind the back-off
    on_event("reconnected events-stream")
    due = schedule.next_due()
    assert due is not None and due.at == pytest.approx(5.0)  # the engine back: at once
