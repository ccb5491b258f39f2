"""The reconciler's metrics: what the control loop counts, and a real scrape of --metrics."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lbrec.reconciler.core.errors import ApplyError, SpecError
from lbrec.reconciler.core.plan import Action, ActionKind, Plan
from lbrec.reconciler.core.report import Outcome, Report
from lbrec.reconciler.runtime.loop import ControlLoop
from lbrec.reconciler.runtime.metrics import LoopMetrics, serve_metrics
from lbrec.reconciler.runtime.options import hostport_arg


def _samples(metrics: LoopMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(metrics: LoopMetrics, name: str, **labels: str) -> float:
    return _samples(metrics)[(name, tuple(sorted(labels.items())))]


def _changed() -> Report:
    action = Action(ActionKind.CREATE, "b1")
    return Report(
        plan=Plan(actions=(action,)),
        check=False,
        outcomes=(Outcome(action, ok=True),),
        generation="g7",
    )


def _in_sync() -> Report:
    return Report(plan=Plan(actions=()), check=False)


def _failed() -> Report:
    action = Action(ActionKind.CREATE, "b1")
    return Report(
        plan=Plan(actions=(action,)),
        check=False,
        outcomes=(Outcome(action, ok=False, error="b1: unhealthy"),),
    )


def test_passes_by_outcome_duration_drift_and_last_success(tmp_path: Path) -> None:
    metrics = LoopMetrics()
    results: list[Report | Exception] = [
        _changed(),  # reason "start": a change, not drift
        _in_sync(),
        _failed(),
        ApplyError("compose failed"),
        SpecError("backends[0].port: bad"),
        _changed(),  # after a docker event: drift repaired
    ]

    def reconcile() -> Report:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    loop = ControlLoop(reconcile, name="watch", resync=None, metrics=metrics, folder=tmp_path)
    # the series exist at zero before the first pass
    assert _value(metrics, "lbrec_reconciler_passes_total", loop="watch", outcome="changed") == 0
    before = time.time()
    for reason in ("start", "resync", "file modified", "file modified", "file modified"):
        loop._one_pass(reason)
    loop._one_pass("docker die")
    assert _value(metrics, "lbrec_reconciler_passes_total", loop="watch", outcome="changed") == 2
    assert _value(metrics, "lbrec_reconciler_passes_total", loop="watch", outcome="in_sync") == 1
    assert _value(metrics, "lbrec_reconciler_passes_total", loop="watch", outcome="failed") == 2
    assert _value(metrics, "lbrec_reconciler_passes_total", loop="watch", outcome="invalid") == 1
    assert _value(metrics, "lbrec_reconciler_pass_duration_seconds_count", loop="watch") == 6
    # the change at start is not drift; the one after `docker die` is (resync found nothing)
    assert _value(metrics, "lbrec_reconciler_drift_repaired_total", loop="watch") == 1
    last = _value(metrics, "lbrec_reconciler_last_success_timestamp_seconds", loop="watch")
    assert before <= last <= time.time()
    info = _value(
        metrics, "lbrec_reconciler_deployed_info", loop="watch", commit="", generation="g7"
    )
    assert info == 1.0


def test_deployed_commit_is_read_from_the_deploy_record(tmp_path: Path) -> None:
    metrics = LoopMetrics()
    (tmp_path / ".lbrec").mkdir()
    (tmp_path / ".lbrec" / "deployed.json").write_text(json.dumps({"commit": "abc123"}))
    ControlLoop(_in_sync, name="sync", resync=None, metrics=metrics, folder=tmp_path)
    assert (
        _value(
            metrics, "lbrec_reconciler_deployed_info", loop="sync", commit="abc123", generation=""
        )
        == 1
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_flag_serves_a_real_scrape(tmp_path: Path) -> None:
    metrics = LoopMetrics()
    loop = ControlLoop(_changed, name="sync", resync=None, metrics=metrics, folder=tmp_path)
    loop._one_pass("trigger")
    port = _free_port()
    assert serve_metrics(("127.0.0.1", port), logging.getLogger("t"), metrics.registry)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "lbrec_reconciler_passes_total" in names
    assert "lbrec_reconciler_pass_duration_seconds_bucket" in names


def test_metrics_flag_on_a_taken_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not serve_metrics(
            ("127.0.0.1", port), logging.getLogger("t"), LoopMetrics().registry
        )


def test_hostport_flag() -> None:
    import argparse

    import pytest

    assert hostport_arg("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert hostport_arg("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", ":9464", "host:port", "127.0.0.1:70000"):
        with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
            hostport_arg(bad)


def test_every_loop_line_is_json_with_an_event_and_an_iso_time(tmp_path: Path) -> None:
    import io
    import re

    from lbrec.proxy.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lbrec.test-events")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    results: list[Report | Exception] = [
        _changed(),
        SpecError("bad"),
        ApplyError("boom"),
        _failed(),
    ]

    def reconcile() -> Report:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    loop = ControlLoop(
        reconcile, name="watch", resync=None, metrics=LoopMetrics(), folder=tmp_path, logger=logger
    )
    for reason in ("start", "file modified", "file modified", "docker die"):
        loop._one_pass(reason)
    logger.info("a line that names no event")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert events == [
        "pass_start",
        "pass_ok",
        "pass_start",
        "pass_invalid",
        "pass_start",
        "pass_failed",
        "pass_start",
        "pass_failed",
        "log",
    ]
    iso = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    assert all(iso.fullmatch(line["ts"]) for line in lines)
    assert lines[1]["pass"] == 1 and lines[1]["changed"] is True and "duration_s" in lines[1]
