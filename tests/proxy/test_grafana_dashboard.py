"""examples/grafana-dashboard.json against a real Prometheus: every query it holds returns data.

Prometheus (Debian's ``prometheus``, installed by scripts/setup.sh) scrapes a running proxy's
admin ``/metrics`` and a reconciler metrics endpoint every second while traffic flows; then
each panel's expression (Grafana's variables replaced: ``$__rate_interval`` by 15s, ``$__range``
by 5m, ``$job`` by ``.*``) goes through the HTTP API and must return at least one series.
This fails in CI when Prometheus is missing, and skips elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lbrec.reconciler.core.plan import Action, ActionKind, Plan
from lbrec.reconciler.core.report import Outcome, Report
from lbrec.reconciler.runtime.loop import ControlLoop
from lbrec.reconciler.runtime.metrics import LoopMetrics
from tests.proxy.conftest import BackendFactory, ProxyFactory, config_doc

_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = _ROOT / "examples" / "grafana-dashboard.json"
# scripts/setup.sh unpacks Debian's package into .venv/tools (no service is started)
_UNPACKED = _ROOT / ".venv" / "tools" / "usr" / "bin" / "prometheus"
PROMETHEUS = os.environ.get(
    "LBREC_PROMETHEUS", str(_UNPACKED) if _UNPACKED.exists() else "/usr/bin/prometheus"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", "15s")
                .replace("$__range", "5m")
                .replace("$job", ".*")
            )
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


def test_the_dashboard_is_valid_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in doc["panels"]]
    assert len(ids) == len(set(ids)) and doc["uid"] and doc["schemaVersion"] >= 30
    names = {v["name"] for v in doc["templating"]["list"]}
    assert names == {"datasource", "job"}
    for panel in doc["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


@pytest.fixture
def reconciler_metrics() -> Iterator[int]:
    """A control loop that ran a few passes, its metrics served on a loopback port."""
    from prometheus_client import start_http_server

    metrics = LoopMetrics()
    action = Action(ActionKind.CREATE, "b1")
    reports = [
        Report(plan=Plan(actions=(action,)), check=False, outcomes=(Outcome(action, ok=True),)),
        Report(plan=Plan(actions=()), check=False),
    ]
    loop = ControlLoop(lambda: reports.pop(0), name="sync", resync=None, metrics=metrics)
    loop._one_pass("trigger")
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        yield port
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    if shutil.which(PROMETHEUS) is None:
        message = f"no Prometheus at {PROMETHEUS} (run scripts/setup.sh)"
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_DOCKER"):
            pytest.fail(f"the dashboard test needs Prometheus and CI must run it: {message}")
        pytest.skip(message)
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, int]) -> int:
        port = _free_port()
        config = tmp_path / "prometheus.yml"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{p}']}}]\n"
            for job, p in targets.items()
        )
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n" + jobs
        )
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _query(http: aiohttp.ClientSession, port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query"
    async with http.get(url, params={"query": expr}) as response:
        doc = await response.json()
    assert doc["status"] == "success", (expr, doc)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


@pytest.fixture
async def traffic(http: aiohttp.ClientSession) -> AsyncIterator[list[str]]:
    urls: list[str] = []
    stop = asyncio.Event()

    async def run() -> None:
        paths = ["/x", "/x", "/x", "/status/404", "/status/500"]
        deadline = time.monotonic() + 60
        for n in range(6000):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            if urls:
                async with http.get(urls[0] + paths[n % len(paths)]) as response:
                    await response.read()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(run())
    yield urls
    stop.set()
    await task


async def test_every_dashboard_query_returns_data_from_a_real_scrape(  # noqa: PLR0917  fixtures
    backends: BackendFactory,
    proxy: ProxyFactory,
    http: aiohttp.ClientSession,
    prometheus: Any,
    reconciler_metrics: int,
    traffic: list[str],
) -> None:
    a, b = await backends("a"), await backends("b")
    p = await proxy(config_doc([("a", a.url, 2), ("b", b.url, 1)], generation="g1"))
    traffic.append(p.url)
    assert p.info.admin is not None
    port = prometheus({"lbrec-proxy": p.info.admin[1], "lbrec-sync": reconciler_metrics})
    # Enough scrapes of both targets, with traffic between them, for rate() over 15s.
    deadline = time.monotonic() + 60
    while True:
        try:
            up = await _query(http, port, "count_over_time(up[15s])")
        except aiohttp.ClientError:
            up = []
        if len(up) == 2 and all(float(s["value"][1]) >= 6 for s in up):
            break
        assert time.monotonic() < deadline, f"Prometheus did not scrape both targets: {up}"
        await asyncio.sleep(0.5)
    health = await _query(http, port, "up")
    assert {s["metric"]["job"]: s["value"][1] for s in health} == {
        "lbrec-proxy": "1",
        "lbrec-sync": "1",
    }
    # promtool's lint of both expositions (names, types, help, units)
    for target in (p.info.admin[1], reconciler_metrics):
        async with http.get(f"http://127.0.0.1:{target}/metrics") as response:
            text = await response.read()
        lint = await asyncio.to_thread(
            subprocess.run,
            [str(Path(PROMETHEUS).with_name("promtool")), "check", "metrics"],
            input=text,
            capture_output=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    empty = []
    for title, expr in _queries():
        if not await _query(http, port, expr):
            empty.append(f"{title}: {expr}")
    assert empty == [], "queries without data:\n" + "\n".join(empty)
    # and the figures are the real ones: the 5xx ratio is about 1 in 5 requests
    ratio = await _query(
        http,
        port,
        'sum(rate(lbrec_proxy_responses_total{code="5xx"}[15s]))'
        " / sum(rate(lbrec_proxy_responses_total[15s]))",
    )
    assert 0.1 < float(ratio[0]["value"][1]) < 0.3, ratio
