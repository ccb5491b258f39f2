"""The rise/fall state machine and the probe loop against real servers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from lbrec.proxy.config import HealthSettings
from lbrec.proxy.health import (
    FAST_INTERVAL,
    HealthMonitor,
    HealthState,
    ProbeTarget,
    RiseFall,
    next_probe_delay,
)
from tests.proxy.conftest import BackendFactory

UP, DOWN, CHECKING = HealthState.UP, HealthState.DOWN, HealthState.CHECKING


@pytest.mark.parametrize(
    ("rise", "fall", "start", "results", "states"),
    [
        (2, 3, CHECKING, "++", [CHECKING, UP]),
        (2, 3, CHECKING, "---", [CHECKING, CHECKING, DOWN]),
        (2, 3, UP, "--+--", [UP, UP, UP, UP, UP]),
        (2, 3, UP, "---", [UP, UP, DOWN]),
        (2, 3, DOWN, "+-++", [DOWN, DOWN, DOWN, UP]),
        (1, 1, UP, "-+-", [DOWN, UP, DOWN]),
        (3, 2, DOWN, "++-+++", [DOWN, DOWN, DOWN, DOWN, DOWN, UP]),
    ],
)
def test_rise_fall(
    rise: int, fall: int, start: HealthState, results: str, states: list[HealthState]
) -> None:
    machine = RiseFall(rise, fall, state=start)
    seen = []
    for char in results:
        machine = machine.observe(char == "+")
        seen.append(machine.state)
    assert seen == states


def test_rise_fall_is_a_value() -> None:
    machine = RiseFall(2, 2)
    after = machine.observe(True)
    assert machine.successes == 0 and after.successes == 1
    assert after.with_thresholds(rise=1, fall=1).rise == 1


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, HealthState]] = []
        self.changed = asyncio.Event()

    def set_health(self, name: str, state: HealthState) -> None:
        self.events.append((name, state))
        self.changed.set()


async def test_probes_mark_down_and_up(backends: BackendFactory) -> None:
    backend = await backends("a")
    sink = _Sink()
    settings = HealthSettings(interval=0.05, timeout=0.5, rise=2, fall=2)
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(session=session, sink=sink, settings=settings)
        monitor.update([ProbeTarget("a", backend.url)], settings, initial={"a": UP})
        backend.healthy = False
        await asyncio.wait_for(sink.changed.wait(), 3)
        assert sink.events == [("a", DOWN)]
        sink.changed.clear()
        backend.healthy = True
        await asyncio.wait_for(sink.changed.wait(), 3)
        assert sink.events[-1] == ("a", UP)
        await monitor.close()


async def test_probe_timeout_and_refused_count_as_failures(backends: BackendFactory) -> None:
    backend = await backends("a")
    await backend.stop()  # nothing listens there now
    sink = _Sink()
    settings = HealthSettings(interval=0.05, timeout=0.2, rise=1, fall=1)
    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(session=session, sink=sink, settings=settings)
        monitor.update([ProbeTarget("a", backend.url)], settings, initial={})
        await asyncio.wait_for(sink.changed.wait(), 3)
        assert sink.events == [("a", DOWN)]
        state = monitor.state_of("a")
        assert state is not None and state.failures >= 1
        monitor.update([], settings, initial={})  # removal cancels the probe task
        assert monitor.state_of("a") is None
        await monitor.close()


@pytest.mark.parametrize(
    ("state", "fast"),
    [
        (RiseFall(2, 3, state=CHECKING), True),  # new backend: settle quickly
        (RiseFall(2, 3, state=UP), False),
        (RiseFall(2, 3, state=UP, failures=1), True),  # up but failing: confirm quickly
        (RiseFall(2, 3, state=DOWN), False),
        (RiseFall(2, 3, state=DOWN, successes=1), True),  # down but answering again
    ],
)
def test_probe_interval_is_fast_only_while_the_state_settles(state: RiseFall, fast: bool) -> None:
    settings = HealthSettings(interval=5.0)
    assert next_probe_delay(state, settings) == (FAST_INTERVAL if fast else 5.0)
    assert next_probe_delay(state, HealthSettings(interval=0.1)) == 0.1
