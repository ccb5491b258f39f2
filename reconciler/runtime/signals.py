"""EDGE. Run a control loop until SIGINT/SIGTERM: the one helper of watch, sync and up.

First signal: stop after the current pass (the loop finishes what it does, the lock is released
cleanly). Second: KeyboardInterrupt, exit 130. `lbrec up` in host mode has the proxy's own
asyncio signal handling (runtime/up.py), which drains in-flight requests first.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

__all__ = ["Runnable", "run_until_signal", "stop_on_signals"]


class Runnable(Protocol):
    def start(self) -> threading.Thread: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...


@contextmanager
def stop_on_signals(stop: Callable[[], None], announce: Callable[[str], None]) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop after the current pass. Second: KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if seen:
            raise KeyboardInterrupt
        seen.append(signum)
        announce(f"{signal.Signals(signum).name}: stopping after the current pass")
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_until_signal(loop: Runnable, log: logging.Logger) -> int:
    """Start ``loop`` in its thread and wait for it, responsive to signals: 0 when it
    stopped cleanly, 130 when a second signal cut a pass short."""
    with stop_on_signals(loop.stop, log.info):
        try:
            thread = loop.start()
            while thread.is_alive():  # short slices: the main thread stays responsive
                thread.join(0.2)
        except KeyboardInterrupt:
            log.warning("interrupted during a pass")
            return 130
    return 0
