"""Shared test set-up: the `docker` marker fails (never skips) under CI when no engine answers."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_ENGINE: tuple[bool, str] | None = None


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None:
        return
    ok, why = _engine_status()
    if ok:
        return
    if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_DOCKER"):
        pytest.fail(f"this test needs the Docker engine and CI must run it: {why}")
    pytest.skip(f"needs Docker: {why} (run scripts/docker-dev.sh)")
