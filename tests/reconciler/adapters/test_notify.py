"""The notify webhook (issue 20, finding 7): no redirects, one deadline for the delivery, a cap,
and delivery off the pass's thread through a bounded queue (drop-oldest, counted and logged),
flushed with a bounded wait at shutdown. Against real receivers on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lbrec.reconciler.adapters import audit
from lbrec.reconciler.adapters.audit import Notifier, deliver, flush_notifications, notify
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.spec import DesiredState

from ..fakes import FAST, TWO, FakeDocker, make_folder
from ..local_http import answering, huge_body, redirecting, trickling

RECORD = {"outcome": "deployed", "command": "lbrec sync"}


@pytest.fixture(autouse=True)
def _drained() -> Iterator[None]:
    """Each test starts and ends with the process's notify queue empty."""
    assert flush_notifications(30)
    yield
    assert flush_notifications(30)


def test_a_delivery_posts_the_record_as_json() -> None:
    with answering(204, b"") as receiver:
        assert deliver(receiver.url + "/hook", RECORD, timeout=5) is None
    seen = receiver.seen[0]
    assert seen.request_line == "POST /hook HTTP/1.1"
    assert seen.header("Content-Type") == "application/json"
    assert json.loads(seen.body) == RECORD


@pytest.mark.parametrize("status", [302, 303, 307])
def test_a_redirect_is_a_failed_delivery_never_followed(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        answering(200) as elsewhere,
        redirecting(elsewhere.url + "/-/admin", status) as receiver,
    ):
        notify(receiver.url, RECORD, timeout=5)
        assert flush_notifications(10)
    assert len(receiver.seen) == 1
    assert elsewhere.seen == [], "the webhook followed the receiver's redirect"
    assert f"answered {status}" in caplog.text


def test_a_huge_answer_is_not_read() -> None:
    with huge_body() as receiver:
        assert deliver(receiver.url, RECORD, timeout=5) is None


def test_a_trickling_receiver_costs_the_delivery_its_deadline_not_more() -> None:
    with trickling(head_first=False, interval=0.5) as receiver:
        started = time.monotonic()
        problem = deliver(receiver.url, RECORD, timeout=1.0)
        took = time.monotonic() - started
    assert took < 8.0, f"a delivery with timeout 1s took {took:.1f}s"
    assert problem is not None and "within 1s" in problem


def test_a_trickling_receiver_never_holds_the_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`lbrec apply` (the pass every loop runs) with a receiver trickling its answer: the pass
    returns at once, the delivery gives up after its 1s in the background."""
    folder = make_folder(tmp_path)
    monkeypatch.setattr("lbrec.reconciler.adapters.probes.http_probe", lambda url, timeout: None)

    def factory(workspace: Workspace, desired: DesiredState) -> FakeDocker:
        return FakeDocker(workspace, desired)

    with trickling(head_first=False, interval=0.5) as receiver:
        spec = folder / "desired-state.yaml"
        spec.write_text(FAST + f"notify: {{url: '{receiver.url}/hook', timeout: 1s}}\n" + TWO)
        started = time.monotonic()
        assert main(["apply", "-f", str(spec)], docker=factory) == 0
        took = time.monotonic() - started
        assert flush_notifications(10)
    assert took < 8.0, f"the pass waited {took:.1f}s for a receiver with timeout 1s"
    assert len(receiver.seen) == 1
    assert "within 1s" in caplog.text


class _Gate:
    """A stand-in for ``deliver`` that holds each delivery until released."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.sent: list[Any] = []

    def __call__(self, url: str, record: Any, *, timeout: float) -> str | None:
        self.started.set()
        self.open.wait(30)
        self.sent.append(record["n"])
        return None


def test_the_queue_drops_the_oldest_when_full_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = _Gate()
    notifier = Notifier(capacity=2, send=gate)
    try:
        notifier.submit("http://127.0.0.1:1/", {"n": 0}, timeout=1)
        assert gate.started.wait(10)  # 0 is being delivered; the queue is empty
        for n in range(1, 6):
            notifier.submit("http://127.0.0.1:1/", {"n": n}, timeout=1)
        assert notifier.dropped == 3
        assert caplog.text.count("notify queue full") == 3
        assert any(getattr(r, "event", None) == "notify_dropped" for r in caplog.records)
        assert not notifier.flush(0.2)  # still held: a bounded wait says so
        gate.open.set()
        assert notifier.flush(10)
    finally:
        gate.open.set()
        notifier.close(10)
    assert gate.sent == [0, 4, 5]  # the newest kept, in order


def test_submit_never_waits_for_a_slow_delivery() -> None:
    gate = _Gate()
    notifier = Notifier(capacity=4, send=gate)
    try:
        started = time.monotonic()
        for n in range(20):
            notifier.submit("http://127.0.0.1:1/", {"n": n}, timeout=1)
        assert time.monotonic() - started < 2.0
    finally:
        gate.open.set()
        notifier.close(10)


def test_close_flushes_then_ends_the_delivery_thread() -> None:
    with answering(204, b"") as receiver:
        notifier = Notifier(capacity=8)
        for n in range(3):
            notifier.submit(receiver.url, {"n": n}, timeout=5)
        assert notifier.close(10)
        assert [json.loads(s.body)["n"] for s in receiver.seen] == [0, 1, 2]
        notifier.submit(receiver.url, {"n": 9}, timeout=5)  # after close: refused, logged
    assert notifier.dropped == 1


def test_the_process_notifier_is_flushed_at_exit(caplog: pytest.LogCaptureFixture) -> None:
    """What atexit runs: a bounded flush that says what it could not send."""
    gate = _Gate()
    notifier = Notifier(capacity=4, send=gate)
    try:
        notifier.submit("http://127.0.0.1:1/", {"n": 1}, timeout=1)
        caplog.set_level(logging.WARNING)
        started = time.monotonic()
        assert not notifier.close(0.3)
        assert time.monotonic() - started < 5.0
        assert "not delivered" in caplog.text
    finally:
        gate.open.set()
    assert audit.SHUTDOWN_WAIT > 0
