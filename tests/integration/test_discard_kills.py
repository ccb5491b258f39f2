"""Issue 25 point 5: a batch that never served is killed, not stopped with its grace period
(a preempted pass held an emergency edit for the whole grace period of a new container that
ignores SIGTERM: 21.47 s for `lbrec add X:PORT:0`)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.engines.compose import ComposeDocker

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("LBREC_BASE_IMAGE", "lbrec-base:bookworm")


def test_discarding_a_batch_that_ignores_sigterm_does_not_wait_its_grace_period(
    tmp_path: Path,
) -> None:
    (tmp_path / "docker-compose.yml").write_text(f"services:\n  x:\n    image: {IMAGE}\n")
    cid = subprocess.run(
        ["docker", "run", "-d", "--stop-timeout", "10", IMAGE, "sh", "-c",
         'trap "" TERM; while true; do sleep 1; done'],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        docker = ComposeDocker(
            folder=tmp_path, project="t25b-discard", compose_file="docker-compose.yml"
        )
        started = time.monotonic()
        docker.discard([cid])
        took = time.monotonic() - started
        gone = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"id={cid}"],
            check=False,
            capture_output=True,
            text=True,
        )
        assert gone.stdout.strip() == ""
        assert took < 3.0, f"discard took {took:.2f}s (the grace period is 10s)"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], check=False, capture_output=True)
