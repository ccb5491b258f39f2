"""The shipped systemd units, as systemd itself reads them: `systemd-analyze verify` says
nothing, and `systemd-analyze security` rates each under 5 (fails in CI without systemd)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((_ROOT / "examples" / "systemd").glob("*.service"))
_LBREC = Path(sys.executable).with_name("lbrec")  # the unit's ExecStart must exist to verify


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_DOCKER"):
            pytest.fail(
                "systemd-analyze is missing and CI must run this test (apt-get install systemd)"
            )
        pytest.skip("needs systemd-analyze (apt-get install systemd)")
    return tool


def _installed(unit: Path, folder: Path) -> Path:
    """The unit as it would be installed, with ExecStart pointing at this checkout's lbrec."""
    text = unit.read_text().replace("/opt/lbrec/.venv/bin/lbrec", str(_LBREC))
    path = folder / unit.name
    path.write_text(text)
    return path


def test_the_units_are_shipped() -> None:
    assert {u.name for u in UNITS} == {
        "lbrec-sync.service",
        "lbrec-up.service",
        "lbrec-watch.service",
    }


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_says_nothing(unit: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [_analyze(), "verify", str(_installed(unit, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_verify_catches_the_unquoted_environment_value(tmp_path: Path) -> None:
    """What the units used to say: systemd keeps `GIT_SSH_COMMAND=ssh` and drops the rest."""
    unit = _installed(_ROOT / "examples" / "systemd" / "lbrec-sync.service", tmp_path)
    text = unit.read_text()
    unquoted = re.sub(r'^Environment="(GIT_SSH_COMMAND=.*)"$', r"Environment=\1", text, flags=re.M)
    assert unquoted != text
    unit.write_text(unquoted)
    result = subprocess.run(
        [_analyze(), "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert "Invalid environment assignment" in result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_security_rates_it_under_5(unit: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [_analyze(), "security", "--offline=true", str(_installed(unit, tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found[1]) < 5.0, result.stdout
