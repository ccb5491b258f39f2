"""proxy/maintenance.py: the file's format, the 503 of a paused route, the hold, following
the file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from lbrec.proxy.config import MaintenanceSettings
from lbrec.proxy.maintenance import (
    HoldGate,
    MaintenanceFile,
    MaintenanceState,
    Pause,
    hold_of,
    parse_state,
    paused_answer,
)
from lbrec.proxy.pages import Page

SHOP = "shop.example.com/"
PAUSE = Pause(since=1.0, message="db migration", retry_after=120)


def test_which_pause_holds_a_route() -> None:
    state = MaintenanceState(routes={SHOP: PAUSE})
    assert state.pause_of(SHOP) == PAUSE
    assert state.pause_of("api.example.com/") is None
    assert state.pause_of(None) is None
    everything = MaintenanceState(all=Pause(since=2.0))
    assert everything.pause_of(SHOP) == Pause(since=2.0)
    assert everything.pause_of(None) == Pause(since=2.0)
    assert parse_state(state.to_json(), source="m") == state


def test_a_bad_file_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"m: all.hold: Input should be less than or equal"):
        parse_state('{"all": {"since": 1, "hold": 9999}}', source="m")
    with pytest.raises(ValueError, match="m: line 1 column 2"):
        parse_state("{nope", source="m")


def test_the_503() -> None:
    status, headers, body = paused_answer(PAUSE, None, None)
    assert status == 503
    assert (b"Retry-After", b"120") in headers and (b"Cache-Control", b"no-store") in headers
    assert body == b"db migration\n"
    page = Page(b"<p>{{message}}</p>", b"text/html; charset=utf-8")
    _, headers, body = paused_answer(Pause(since=1), MaintenanceSettings(retry_after=5), page)
    assert (b"Retry-After", b"5") in headers
    assert (b"Content-Type", b"text/html; charset=utf-8") in headers
    assert body == b"<p></p>"
    _, headers, body = paused_answer(Pause(since=1), None, None)
    assert (b"Retry-After", b"30") in headers and body.startswith(b"Down for maintenance")


def test_hold_of() -> None:
    assert hold_of(Pause(since=1, hold=3), MaintenanceSettings(hold=10)) == 3
    assert hold_of(Pause(since=1), MaintenanceSettings(hold=10)) == 10
    assert hold_of(Pause(since=1), None) == 0


async def test_a_held_request_goes_on_when_resumed() -> None:
    gate = HoldGate(MaintenanceState(routes={SHOP: PAUSE}))
    waiting = asyncio.create_task(gate.wait(SHOP, 5.0))
    await asyncio.sleep(0.05)
    assert gate.waiting == 1 and not waiting.done()
    gate.update(MaintenanceState(routes={SHOP: PAUSE, "other/": PAUSE}))  # still held
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    gate.update(MaintenanceState())
    assert await asyncio.wait_for(waiting, 1) is None
    assert time.monotonic() - started < 0.5 and gate.waiting == 0


async def test_a_held_request_gets_the_503_after_the_hold() -> None:
    gate = HoldGate(MaintenanceState(all=PAUSE))
    started = time.monotonic()
    assert await gate.wait(SHOP, 0.2) == PAUSE
    assert 0.15 < time.monotonic() - started < 1.0
    assert await gate.wait(SHOP, 0) == PAUSE  # no hold: at once
    assert await gate.wait(None, 0) == PAUSE
    assert await HoldGate().wait(SHOP, 5) is None  # not paused: at once


async def test_held_requests_are_bounded() -> None:
    gate = HoldGate(MaintenanceState(all=PAUSE), max_waiting=3)
    held = [asyncio.create_task(gate.wait(SHOP, 5)) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert await asyncio.wait_for(gate.wait(SHOP, 5), 0.5) == PAUSE  # the 4th: at once
    gate.update(MaintenanceState())
    assert await asyncio.gather(*held) == [None, None, None]


def test_following_the_file(tmp_path: Path) -> None:
    pool = tmp_path / "backends.json"
    follow = MaintenanceFile(pool)
    assert not follow.poll() and not follow.state.active  # no file: nothing paused
    path = tmp_path / "maintenance.json"
    path.write_text(MaintenanceState(all=PAUSE).to_json())
    assert follow.poll() and follow.state.all == PAUSE
    assert not follow.poll()  # unchanged: one stat
    path.write_text("{broken")
    os.utime(path, ns=(1, 1))
    assert not follow.poll() and follow.state.all == PAUSE  # the last good state
    assert follow.error is not None and "maintenance.json" in follow.error
    path.unlink()
    assert follow.poll() and not follow.state.active and follow.error is None


async def test_follow_tells_the_gate(tmp_path: Path) -> None:
    follow = MaintenanceFile(tmp_path / "backends.json")
    gate = HoldGate()
    task = asyncio.create_task(follow.follow(gate, interval=0.02))
    (tmp_path / "maintenance.json").write_text(MaintenanceState(all=PAUSE).to_json())
    for _ in range(100):
        if gate.state.active:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    assert gate.state.all == PAUSE
