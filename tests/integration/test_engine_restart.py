"""An engine restart under load, on an engine of the test's own (issue 25, point 1).

Two projects, A and B, on one test-owned ``dockerd`` (tests/support/netns_engine.py: its own
network namespace, data-root and socket; never the machine's engine). A is served by
``lbrec proxy`` and followed by ``lbrec watch``; B only runs. The engine is stopped for a few
seconds and started again, three times, under a bounded load through A's proxy. Without
live-restore the containers stop with the engine and come back on host ports Docker hands out
again from 32768 up, across both projects: A's old URLs may then reach B's containers. No
request may be answered by B. The outage of each cycle and the failed requests are printed
(``pytest -s``) for docs/faults.md.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.load import Load
from tests.support.netns_engine import Node

from .conftest import Project, demo_folder, lbrec_env, start_lbrec, wait_until

pytestmark = [pytest.mark.netns_engine, pytest.mark.slow]

CYCLES = 3
DOWN_SECONDS = 20.0  # as in the issue: long enough for the back-off to grow past it


@dataclass
class Deploy(Project):
    """A project on the test's engine; every ``lbrec`` command must succeed."""

    def lbrec(
        self, *args: str, check: bool | None = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return super().lbrec(*args, check=check, timeout=timeout)

    def background(self, log: str, *args: str) -> subprocess.Popen[bytes]:
        return start_lbrec(self.folder, self.env, log, *args)

    def entries(self) -> list[dict[str, object]]:
        backends: list[dict[str, object]] = self.pool["backends"]  # type: ignore[assignment]
        return backends

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _deploy(tmp: Path, node: Node, tag: str, listen: int, backends: str) -> Deploy:
    folder = demo_folder(tmp / tag)
    name = f"t25-{tag}-{uuid.uuid4().hex[:6]}"
    (folder / "desired-state.yaml").write_text(
        f"project: {name}\n"
        f"listen: 127.0.0.1:{listen}\n"
        f"admin: 127.0.0.1:{listen + 10}\n"
        f"publish_host: {node.address}\n"
        "rollout: {min_healthy_time: 0.5s, healthy_deadline: 60s, drain_timeout: 5s}\n"
        f"backends:\n{backends}"
    )
    env = node.env(lbrec_env())
    return Deploy(folder, name, env)


class FrozenWatch:
    """When A's pool was frozen: (monotonic time, every entry frozen), at each change."""

    def __init__(self, deploy: Deploy) -> None:
        self.deploy = deploy
        self.changes: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 400
        last: bool | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                pool = self.deploy.entries()
                frozen = bool(pool) and all(e.get("frozen") for e in pool)
            except (OSError, ValueError, KeyError):
                frozen = bool(last)
            if frozen != last:
                self.changes.append((time.monotonic(), frozen))
                last = frozen
            time.sleep(0.02)

    def frozen_after(self, since: float) -> float | None:
        return next((t for t, frozen in self.changes if frozen and t >= since), None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _stop_pid(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _ports(node: Node, project: str) -> dict[str, str]:
    """container name -> its published HOST:PORT on the test engine."""
    ids = node.docker("ps", "-q", "--filter", f"label=lbrec.project={project}").split()
    out: dict[str, str] = {}
    if not ids:
        return out
    for c in json.loads(node.docker("inspect", *ids, check=False) or "[]"):
        for bindings in (c["NetworkSettings"]["Ports"] or {}).values():
            for b in bindings or ():
                out[c["Name"].lstrip("/")] = f"{b['HostIp']}:{b['HostPort']}"
    return out


def test_an_engine_restart_never_sends_a_request_to_another_project(
    engine: Node, tmp_path: Path
) -> None:
    node = engine
    a = _deploy(
        tmp_path,
        node,
        "a",
        25301,
        "  - {name: a1, port: 8000, weight: 1, replicas: 2}\n"
        "  - {name: a2, port: 8001, weight: 1}\n",
    )
    b = _deploy(
        tmp_path,
        node,
        "b",
        25391,
        "  - {name: b1, port: 8000, weight: 1, replicas: 3}\n"
        "  - {name: b2, port: 8001, weight: 1}\n",
    )
    # A first: its instances take the lowest ports, which B's take after a restart.
    a.lbrec("apply")
    b.lbrec("apply")
    proxy = a.background("proxy.log", "proxy", "--config", "config/backends.json")
    watch = a.background("watch.log", "watch", "--resync", "60")
    load = Load(25301)  # 4 threads, about 200 requests/s, at most 60,000 in 400 s
    frozen = FrozenWatch(a)
    figures: list[dict[str, object]] = []
    try:
        wait_until(lambda: http_ok(25301), 30, "A's proxy to answer", log=a.folder / "proxy.log")
        time.sleep(2.0)  # the watch loop's first pass and its events stream are up
        load.start()
        frozen.start()
        time.sleep(3.0)
        for cycle in range(1, CYCLES + 1):
            before = {str(e["url"]) for e in a.entries()}
            began = time.monotonic()
            stop_s = node.stop()
            time.sleep(DOWN_SECONDS)
            start_s = node.start()
            back = time.monotonic()
            wait_until(
                lambda back=back: _served_by_a_since(load, back) is not None,  # type: ignore[misc]
                90,
                f"A served again after restart {cycle}",
                log=a.folder / "watch.log",
            )
            served = _served_by_a_since(load, back)
            assert served is not None
            time.sleep(8.0)  # and it stays so
            b_ports = set(_ports(node, b.name).values())
            window = load.between(began, time.monotonic())
            failed = sum(1 for _t, status, _who in window if not 200 <= status < 300)
            after = [a for a in window if a[0] >= back]
            froze = frozen.frozen_after(began)
            figures.append(
                {
                    "cycle": cycle,
                    "engine_stop_s": round(stop_s, 2),
                    "engine_start_s": round(start_s, 2),
                    "outage_s": round(served - began, 2),
                    "served_after_engine_back_s": round(served - back, 2),
                    "requests": len(window),
                    "failed": failed,
                    "failed_after_engine_back": sum(1 for a in after if not 200 <= a[1] < 300),
                    "pool_frozen_after_stop_began_s": None
                    if froze is None
                    else round(froze - began, 2),
                    "by_b": sum(1 for _t, _s, who in window if who.startswith("b")),
                    "a_old_urls_now_b": sorted(
                        u for u in before if u.removeprefix("http://") in b_ports
                    ),
                }
            )
    finally:
        load.stop()
        frozen.stop()
        _stop_pid(watch)
        _stop_pid(proxy)
    who = Counter(w for _t, s, w in load.answers if 200 <= s < 300)
    report = {"answers_by_backend": dict(who), "cycles": figures}
    print("\nengine restart figures:", json.dumps(report, indent=1))
    assert not [w for w in who if w.startswith("b")], (
        f"requests to A answered by B's containers: {report}\n" + a.log("watch.log")
    )
    assert who["a1"] and who["a2"], report


def http_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/-/healthz")
        response = conn.getresponse()
        response.read()
        return response.status < 500
    except OSError:
        return False
    finally:
        conn.close()


def _served_by_a_since(load: Load, since: float) -> float | None:
    """When A's proxy first answered 200 from an A backend after ``since``."""
    for t, status, who in load.between(since, time.monotonic()):
        if status == 200 and who.startswith("a"):
            return t
    return None
