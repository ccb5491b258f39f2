"""The README's two commands in either order (issue 26): the main job deploys from deploy/, a
folder git ignores, and runs lbrec from .venv-run (the wheel); it never rewrites the
repository's own desired-state.yaml, docker-compose.yml or config/backends.json (which
tests/reconciler/test_repo_files.py holds to the sample), and installs none of the tests' tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_main_job_writes_only_ignored_files() -> None:
    for path in ("deploy/desired-state.yaml", "deploy/config/backends.json", ".venv-run/bin/lbrec"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored by git"
    script = (REPO / "scripts/quickstart.sh").read_text()
    assert "\ncd deploy\n" in script
    assert 'exec "../$run/bin/lbrec" up -f desired-state.yaml' in script


def test_only_the_tests_install_the_tests_tools() -> None:
    setup = (REPO / "scripts/setup.sh").read_text()
    assert 'if [ "$tests" = 1 ] && [ ! -x /usr/bin/chromium ]' in setup
    assert 'if [ "$tests" = 1 ] && [ ! -x /usr/bin/prometheus ]' in setup
    assert 'if [ "$tests" = 1 ] && [ "${#missing[@]}" -gt 0 ]' in setup
    assert "setup.sh --tests" not in (REPO / "scripts/quickstart.sh").read_text()
    test = (REPO / "scripts/test.sh").read_text()
    assert test.count("scripts/setup.sh --tests") == 2
