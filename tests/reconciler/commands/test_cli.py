"""The CLI's contract with a fake Docker port: exit codes, output formats, no colour off a TTY."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.audit import flush_notifications
from lbrec.reconciler.adapters.lock import project_lock
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.spec import DesiredState

from ..fakes import FAST, TWO, FakeDocker, make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture
def cli(folder: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (folder / "desired-state.yaml").write_text(FAST + TWO)
    # The fake's instances answer their health check (there is no server behind them).
    monkeypatch.setattr("lbrec.reconciler.adapters.probes.http_probe", lambda url, timeout: None)
    fakes: list[FakeDocker] = []

    def factory(workspace: Workspace, desired: DesiredState) -> FakeDocker:
        fake = FakeDocker(workspace, desired)
        if fakes:  # keep the containers between commands, like a real engine
            fake.containers = fakes[-1].containers
        fakes.append(fake)
        return fake

    def run(*args: str) -> int:
        return main([*args, "-f", str(folder / "desired-state.yaml")], docker=factory)

    return run


def test_diff_exit_codes_and_plain_output(cli, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli("diff") == 1
    out = capsys.readouterr().out
    assert "+ a port 9101 weight 1" in out and "\033[" not in out  # no colour off a TTY
    assert cli("apply", "--check") == 1
    assert capsys.readouterr().out == out  # apply --check is diff
    assert cli("apply") == 0
    assert "RECAP ok=2  changed=2  removed=0  failed=0" in capsys.readouterr().out
    assert cli("diff") == 0
    assert "No changes" in capsys.readouterr().out


def test_json_output_is_one_document(cli, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli("apply", "-o", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["action"] for a in doc["actions"]] == ["create", "create"]
    assert doc["recap"]["changed"] == 2 and doc["routed"] == ["a", "b"]


def test_invalid_file_exits_2_with_the_field(cli, folder, capsys) -> None:  # type: ignore[no-untyped-def]
    (folder / "desired-state.yaml").write_text(TWO.replace("weight: 2", "weight: -1"))
    assert cli("diff") == 2
    err = capsys.readouterr().err
    assert "backends[1].weight" in err and "(got -1)" in err and "Traceback" not in err


def test_lock_timeout_exits_4(cli, folder, capsys) -> None:  # type: ignore[no-untyped-def]
    with project_lock(folder, command="test holder"):
        assert cli("apply", "--lock-timeout", "0.3") == 4
    err = capsys.readouterr().err
    assert "waiting for the lock" in err and "test holder" in err
    assert cli("apply", "--lock-timeout", "0.3") == 0  # released with its holder


def test_add_with_a_port_taken_on_the_host_still_applies(cli, folder, capsys) -> None:  # type: ignore[no-untyped-def]
    """`port` is the container's port: Docker allocates each instance's host port, so a
    port something on the host listens on is no conflict (it was before 0.3)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli("add", f"c:{port}:1") == 0
    assert f"port: {port}" in (folder / "desired-state.yaml").read_text()


def test_init_writes_the_folder_as_project(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "My Shop_2"
    folder.mkdir()
    spec = folder / "desired-state.yaml"
    assert main(["init", "a:9101:1", "--no-apply", "-f", str(spec)]) == 0
    lines = spec.read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=desired-state.schema.json"
    assert next(line for line in lines if not line.startswith("#")) == "project: my-shop-2"
    schema = json.loads((folder / "desired-state.schema.json").read_text())
    assert schema["title"] == "DesiredState" and "allOf" in schema
    assert main(["init", "a:9101:2", "--no-apply", "-f", str(spec)]) == 0  # re-init keeps it
    assert spec.read_text().count("project:") == 1


def test_validate_json_is_one_document_either_way(cli, folder, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli("validate", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "file": str(folder / "desired-state.yaml"),
        "backends": 2,
    }
    (folder / "desired-state.yaml").write_text("")
    assert cli("validate", "-o", "json") == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is False and doc["exit_code"] == 2 and "empty" in doc["error"]
    assert "error:" in captured.err  # people still read stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "--no-apply"],  # apply applies: a flag that would not is refused
        ["watch", "-o", "json"],  # the loops log (--log-format): -o would be ignored
        ["up", "--no-color"],
        ["sync", "--repo", "x", "-o", "json"],
    ],
)
def test_flags_a_command_would_ignore_are_refused(argv: list[str]) -> None:
    from lbrec.reconciler.commands.cli import main

    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2


# --- the audit log, status --history, the notify webhook ---------------------------------------


class _Receiver:
    """A real HTTP server on loopback that records what a webhook is sent."""

    def __init__(self, status: int = 204) -> None:
        import http.server
        import threading

        received: list[dict[str, object]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_every_pass_is_in_the_audit_log_and_status_history_reads_it(cli, folder, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli("apply") == 0
    assert cli("apply") == 0  # in sync
    (folder / "desired-state.yaml").write_text(
        FAST + "backends: [{name: a, port: 9101, weight: x}]\n"
    )
    assert cli("apply") == 2  # invalid: recorded as a failed pass, with the field
    capsys.readouterr()
    assert cli("status", "--history", "-o", "json") == 0
    history = json.loads(capsys.readouterr().out)["history"]
    assert [h["outcome"] for h in history] == ["deployed", "in_sync", "failed"]
    first = history[0]
    assert first["command"] == "lbrec apply" and first["recap"]["changed"] == 2
    assert {c["backend"] for c in first["changes"]} == {"a", "b"}
    assert "weight" in history[2]["error"] and history[2]["kind"] == "SpecError"
    assert cli("status", "--history", "2") == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:3] == ["TIME", "COMMAND", "OUTCOME"] and len(text) == 3
    assert "in_sync" in text[1] and "failed" in text[2]


def test_notify_gets_deployed_and_failed_passes_not_in_sync_ones(cli, folder) -> None:  # type: ignore[no-untyped-def]
    receiver = _Receiver()
    try:
        spec = folder / "desired-state.yaml"
        spec.write_text(FAST + f"notify: {{url: '{receiver.url}', timeout: 5s}}\n" + TWO)
        assert cli("apply") == 0
        assert cli("apply") == 0  # in sync: nothing sent
        spec.write_text(spec.read_text().replace("weight: 2", "weight: 5"))
        assert cli("apply") == 0
        assert flush_notifications(10)  # delivered off the pass's thread (issue 20 finding 7)
    finally:
        receiver.close()
    outcomes = [r["json"]["outcome"] for r in receiver.received]  # type: ignore[index]
    assert outcomes == ["deployed", "deployed"]
    assert all(r["type"] == "application/json" for r in receiver.received)
    last = receiver.received[-1]["json"]
    assert last["changes"] == [{"backend": "b", "action": "reweight"}]  # type: ignore[index]


def test_a_notify_receiver_that_is_down_never_fails_a_pass(cli, folder, caplog) -> None:  # type: ignore[no-untyped-def]
    receiver = _Receiver()
    url = receiver.url
    receiver.close()  # nothing listens there any more
    (folder / "desired-state.yaml").write_text(
        FAST + f"notify: {{url: '{url}', timeout: 1s}}\n" + TWO
    )
    assert cli("apply") == 0
    assert flush_notifications(10)
    assert "notify" in caplog.text and url in caplog.text


def test_init_in_an_empty_folder_writes_the_demo_files(tmp_path: Path) -> None:
    """`pip install lbrec` is enough: init writes the demo backend's build files (the package
    carries them), identical to the repository's, and never overwrites a folder's own."""
    root = Path(__file__).resolve().parents[3]
    spec = tmp_path / "desired-state.yaml"
    assert main(["init", "web:9101:1", "--no-apply", "-f", str(spec)]) == 0
    for name in ("Dockerfile.backend", "backend/app.py", ".dockerignore"):
        assert (tmp_path / name).read_bytes() == (root / name).read_bytes(), name
    assert not (tmp_path / "Dockerfile.proxy").exists()  # only in container mode
    (tmp_path / "Dockerfile.backend").write_text("FROM mine\n")
    spec.write_text("proxy: {mode: container}\nbackends: []\n")
    assert main(["init", "web:9101:1", "--no-apply", "-f", str(spec)]) == 0
    assert (tmp_path / "Dockerfile.backend").read_text() == "FROM mine\n"  # the user's own
    assert (tmp_path / "Dockerfile.proxy").read_bytes() == (root / "Dockerfile.proxy").read_bytes()


def test_a_refused_init_leaves_the_empty_folder_empty(tmp_path: Path) -> None:
    from lbrec.reconciler.core.errors import DockerUnavailable

    class NoEngine(FakeDocker):
        def check(self) -> None:
            raise DockerUnavailable("no engine answers")

    spec = tmp_path / "desired-state.yaml"
    code = main(["init", "web:9101:1", "-f", str(spec)], docker=NoEngine)
    assert code == 3
    left = {p.name for p in tmp_path.iterdir()} - {".lbrec", ".lbrec.lock"}  # the lock's own
    assert left == set()  # no demo file, no schema, no desired state
