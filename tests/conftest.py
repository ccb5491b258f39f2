"""Shared test set-up: the `docker` and `netns_engine` markers fail (never skip) under CI when
no engine answers (or none of the test's own can be made)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import settings

_ENGINE: tuple[bool, str] | None = None

# Hypothesis profiles: `ci` (the default: every count as written) and `dev`, the quick loop's
# (scripts/test.sh --quick): properties ask tests/support/examples.py for their count.
settings.register_profile("ci", deadline=None)
settings.register_profile("dev", deadline=None, max_examples=10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Markers by folder or file, so that a new test lands in the right loop without a decorator.
# `slow`: seconds each, or a browser, a process tree, a compiler: CI runs them, --quick not.
_SLOW = (
    "tests/proxy/desync/",
    "tests/proxy/test_process.py",
    "tests/proxy/test_handoff.py",
    "tests/proxy/test_build.py",
    "tests/proxy/test_dashboard.py",
    "tests/proxy/test_grafana_dashboard.py",
    "tests/test_demo_backend.py",
    "tests/test_examples.py",
    # process trees and real clients: lbrec up, shells, a browser, the JSON Schema CLI
    "tests/reconciler/runtime/test_up_serve_first.py",
    "tests/reconciler/commands/test_completion.py",
    "tests/proxy/http2/test_h2_chromium.py",
    "tests/reconciler/core/test_schema.py",
    # seconds of load or of timeouts run out on purpose
    "tests/proxy/test_reload.py",
    "tests/proxy/test_connection_edges.py",
    "tests/proxy/http2/test_h2_clients.py",  # h2load and curl
)
# Single tests of seconds each in files that are otherwise quick (node id prefixes).
_SLOW_TESTS = (
    "tests/reconciler/commands/test_compat.py::test_python_cli_py_edits_the_desired_state",
    "tests/proxy/test_ratelimit.py::test_the_memory_of_a_full_lru_stops_growing",
    "tests/proxy/test_ratelimit.py::test_a_million_spoofed_addresses_stay_bounded",
    "tests/reconciler/core/test_plan.py::test_planning_and_rendering_stay_linear",
    "tests/proxy/test_admin_hosts.py::test_a_bad_admin_hosts_value_stops_the_proxy_at_start",
    "tests/proxy/http2/test_h2_forward.py::test_a_slow_backend_back_pressures_the_upload",
    "tests/proxy/http2/test_h2_floods.py::test_zero_window_stall",
    "tests/proxy/test_route_features_http2.py::test_a_client_gone_during_the_hold_ends",
    "tests/proxy/test_route_features_access.py::test_concurrency_cap_and_its_slot_released",
    "tests/proxy/test_forward_auth.py::test_a_timeout_fails_closed",
    # a second of a timeout run out on purpose, each
    "tests/proxy/test_limits.py::test_slowloris_is_closed_after_the_header_timeout",
    "tests/proxy/test_limits.py::test_pipelining_is_bounded_for_a_client_that_never_reads",
    "tests/proxy/test_tls_transport.py::test_a_silent_client_is_dropped_after_the_handshake",
    "tests/reconciler/adapters/test_notify.py::test_a_trickling_receiver",
    "tests/reconciler/adapters/test_http_client.py::test_a_trickling_server_cannot_hold",
    "tests/reconciler/adapters/test_probes.py::test_a_trickling_backend_cannot_hold_the_probe",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if where.startswith("tests/integration/"):
            item.add_marker(pytest.mark.docker)
        if where.startswith(_SLOW) or item.nodeid.startswith(_SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


def _engine_status() -> tuple[bool, str]:
    global _ENGINE
    if _ENGINE is None:
        if shutil.which("docker") is None:
            _ENGINE = (False, "the docker CLI is not installed")
        else:
            info = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            compose = subprocess.run(
                ["docker", "compose", "version"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            if info.returncode != 0:
                _ENGINE = (False, f"no Docker engine answers: {info.stderr.strip()[-200:]}")
            elif compose.returncode != 0:
                _ENGINE = (False, "Docker Compose v2 is missing")
            else:
                _ENGINE = (True, "")
    return _ENGINE


def _netns_engine_status() -> tuple[bool, str]:
    """An engine of the test's own can be made here (tests/support/netns_engine.py); it
    copies the offline base image from the machine's engine, so that one must answer too."""
    from tests.support.netns_engine import missing_requirements

    why = missing_requirements()
    if why is not None:
        return False, why
    return _engine_status()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns_engine") is not None:
        ok, why = _netns_engine_status()
    elif item.get_closest_marker("docker") is not None:
        ok, why = _engine_status()
    else:
        return
    if ok:
        return
    if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_DOCKER"):
        pytest.fail(f"this test needs the Docker engine and CI must run it: {why}")
    pytest.skip(f"needs Docker: {why} (run scripts/docker-dev.sh)")
