"""`lbrec pause` and `lbrec resume`: the state file the proxy follows, written at once, without
a pass; routes named by host or host/path; bad names refused with the routes listed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from lbrec.proxy.maintenance import MaintenanceFile, parse_state
from lbrec.reconciler.adapters.lock import project_lock
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.maintenance import select_routes
from lbrec.reconciler.core.spec import parse_spec

ROUTED = """\
routes:
  - {host: shop.example.com, backends: [web]}
  - {host: shop.example.com, path: /api/, backends: [web]}
  - {host: admin.example.com, backends: [web]}
backends:
  - {name: web, port: 8000}
"""


def lbrec(folder: Path, *args: str) -> int:
    return main([*args, "-f", str(folder / "desired-state.yaml")])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "desired-state.yaml").write_text(ROUTED)
    return tmp_path


def state(folder: Path):  # type: ignore[no-untyped-def]
    path = folder / "config" / "maintenance.json"
    return parse_state(path.read_text(), source=str(path))


def test_pause_and_resume_one_host(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lbrec(folder, "pause", "shop.example.com", "--message", "db", "--hold", "10s") == 0
    out = capsys.readouterr().out
    assert "paused shop.example.com/, shop.example.com/api/" in out and "10s" in out
    paused = state(folder)
    assert set(paused.routes) == {"shop.example.com/", "shop.example.com/api/"}
    pause = paused.routes["shop.example.com/"]
    assert (pause.message, pause.hold) == ("db", 10.0)
    assert stat.S_IMODE((folder / "config" / "maintenance.json").stat().st_mode) == 0o644
    # what the proxy reads, beside its backends.json
    follow = MaintenanceFile(folder / "config" / "backends.json")
    assert follow.poll() and follow.state.pause_of("admin.example.com/") is None
    assert lbrec(folder, "resume", "shop.example.com/api") == 0
    assert set(state(folder).routes) == {"shop.example.com/"}
    assert lbrec(folder, "resume", "--all") == 0
    assert not state(folder).active


def test_pause_all_in_json(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lbrec(folder, "pause", "--all", "--retry-after", "2m", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["routes"] is None and doc["changed"]
    assert doc["state"]["all"]["retry_after"] == 120
    assert lbrec(folder, "resume", "admin.example.com") == 0
    assert "still paused" in capsys.readouterr().out


def test_pause_acts_while_a_pass_holds_the_lock(folder: Path) -> None:
    with project_lock(folder, command="a long rollout", timeout=1):
        assert lbrec(folder, "pause", "--all") == 0
    assert state(folder).all is not None


def test_bad_names(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lbrec(folder, "pause", "nope.example.com") == 2
    err = capsys.readouterr().err
    assert "'nope.example.com': no such route" in err and "shop.example.com/api/" in err
    assert lbrec(folder, "pause") == 2
    assert "name a route" in capsys.readouterr().err
    assert lbrec(folder, "pause", "--all", "shop.example.com") == 2
    assert not (folder / "config" / "maintenance.json").exists()


def test_a_file_without_routes_pauses_with_all(tmp_path: Path) -> None:
    (tmp_path / "desired-state.yaml").write_text("backends: [{name: web, port: 8000}]\n")
    assert lbrec(tmp_path, "pause", "web") == 2
    assert lbrec(tmp_path, "pause", "--all") == 0
    assert lbrec(tmp_path, "resume", "--all") == 0
    assert lbrec(tmp_path, "resume", "--all") == 0  # already so


def test_select_routes() -> None:
    desired = parse_spec(ROUTED)
    assert select_routes(desired, ["SHOP.example.com/api/"]) == ["shop.example.com/api/"]
    assert select_routes(desired, ["admin.example.com", "admin.example.com/"]) == [
        "admin.example.com/"
    ]
    anyhost = parse_spec("routes: [{backends: [web]}]\nbackends: [{name: web, port: 1}]\n")
    assert select_routes(anyhost, ["*"]) == ["*/"]
