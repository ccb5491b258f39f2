"""The original tool's entry point keeps working: `python cli.py init|add|remove ...`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_python_cli_py_edits_the_desired_state(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REPO / "cli.py"), *args, "--no-apply"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    r = cli("init", "backend1:9001:2", "backend2:9002:3")
    assert r.returncode == 0, r.stderr
    assert cli("add", "backend3:9003:1").returncode == 0
    assert cli("remove", "9002").returncode == 0
    text = (tmp_path / "desired-state.yaml").read_text()
    assert "backend1, port: 9001, weight: 2" in text and "backend3, port: 9003, weight: 1" in text
    assert "backend2" not in text
    bad = cli("remove", "backend9")
    assert bad.returncode == 2 and "no backend named or on port 'backend9'" in bad.stderr
