"""Credentials in ``--repo`` (issue 20, finding 6): ``https://user:token@host/repo.git`` is given
to git only; the revision's ``source`` everywhere it is shown or stored (backends.json, hence
``/-/pool`` and the status page; ``.lbrec/deployed.json``; the audit log; the notify payload;
`lbrec status`; the logs) is the URL without its userinfo.

End to end: a real git fetch over HTTP (git's dumb protocol, from a static server on 127.0.0.1)
with a token in the URL, a real pass through the fake engine, then every output searched."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrec.reconciler.adapters.audit import flush_notifications
from lbrec.reconciler.adapters.git import GitError, Mirror
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.commands.cli import main
from lbrec.reconciler.core.redact import redact_url
from lbrec.reconciler.core.spec import DesiredState
from lbrec.reconciler.runtime.options import RuntimeOptions
from lbrec.reconciler.runtime.sync import run_sync

from ..fakes import FAST, FakeDocker, make_folder
from ..local_http import answering
from .test_sync import git as _git

TOKEN = "ghp_s3cr3tT0ken"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served_repo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A bare repository served read-only over HTTP on 127.0.0.1: (its URL, a clone to push
    from). The server ignores credentials; git sends them as a client would."""
    root = tmp_path / "served"
    root.mkdir()
    bare = root / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "work"
    _git(tmp_path, "clone", "-q", str(bare), str(work))
    _git(work, "checkout", "-q", "-b", "main")
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/origin.git", work
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _push(work: Path, bare: Path, text: str) -> None:
    (work / "desired-state.yaml").write_text(text)
    _git(work, "add", "desired-state.yaml")
    _git(work, "commit", "-q", "-m", "deploy")
    _git(work, "push", "-q", "origin", "HEAD:main")
    _git(bare, "update-server-info")  # what git's dumb HTTP protocol reads


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:tok@example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("https://tok@example.com/repo.git", "https://example.com/repo.git"),
        ("https://u:p@ss@example.com:8443/r.git", "https://example.com:8443/r.git"),
        ("ssh://git:pw@example.com/r.git", "ssh://example.com/r.git"),
        ("https://example.com/repo.git", "https://example.com/repo.git"),
        ("git@example.com:org/repo.git", "git@example.com:org/repo.git"),
        ("/srv/repos/app.git", "/srv/repos/app.git"),
        ("file:///srv/repos/app.git", "file:///srv/repos/app.git"),
    ],
)
def test_redact_url_strips_the_userinfo_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_token_in_repo_is_in_none_of_the_outputs(
    served_repo: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, work = served_repo
    bare = Path(work.parent / "served" / "origin.git")
    url = base.replace("http://", f"http://deploy:{TOKEN}@")
    folder = make_folder(_mkdir(tmp_path))
    spec = folder / "desired-state.yaml"
    monkeypatch.setattr("lbrec.reconciler.adapters.probes.http_probe", lambda u, t: None)

    def factory(workspace: Workspace, desired: DesiredState) -> FakeDocker:
        return FakeDocker(workspace, desired)

    with answering(204, b"") as receiver:
        _push(
            work,
            bare,
            FAST
            + f"notify: {{url: '{receiver.url}/hook', timeout: 5s}}\n"
            + "backends:\n  - {name: a, port: 19511, weight: 1}\n",
        )
        policy = tmp_path / "policy.yaml"  # the operator lets this commit notify 127.0.0.1
        policy.write_text("notify_hosts: ['127.0.0.1']\n")
        options = RuntimeOptions(repo=url, file=spec, once=True, policy=policy)
        assert run_sync(options, factory) == 0
        assert flush_notifications(10)
        assert main(["status", "-f", str(spec)], docker=factory) == 0
        assert main(["status", "--history", "-o", "json", "-f", str(spec)], docker=factory) == 0
    out = capsys.readouterr()

    deployed = json.loads((folder / ".lbrec" / "deployed.json").read_text())
    assert deployed["source"] == base  # the repository still named, without the token
    pool = json.loads((folder / "config" / "backends.json").read_text())
    assert pool["revision"]["source"] == base
    assert len(receiver.seen) == 1
    assert json.loads(receiver.seen[0].body)["revision"]["source"] == base

    assert TOKEN not in out.out and TOKEN not in out.err  # lbrec status, the logs
    assert TOKEN not in receiver.seen[0].body.decode()
    leaks = [
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and TOKEN.encode() in p.read_bytes()
    ]
    assert leaks == []  # backends.json, deployed.json, audit.jsonl, the mirror's files


def _mkdir(tmp_path: Path) -> Path:
    folder = tmp_path / "deploy"
    folder.mkdir()
    return folder


def test_a_failed_fetch_never_shows_the_token(tmp_path: Path) -> None:
    with answering(404, b"") as server:  # not a repository: git fails, quoting the URL
        url = server.url.replace("http://", f"http://deploy:{TOKEN}@") + "/nope.git"
        mirror = Mirror(url, tmp_path / "mirror", timeout=30)
        with pytest.raises(GitError) as caught:
            mirror.fetch("main")
    err = caught.value
    assert TOKEN not in err.message and TOKEN not in err.detail and TOKEN not in str(err.hint)


def test_git_errors_are_scrubbed_of_any_quoted_credentials() -> None:
    """git (older versions, some transports) quotes the URL it failed on: the message and the
    detail that lbrec logs keep the URL without its userinfo."""
    from lbrec.reconciler.adapters.git import _scrub

    stderr = f"fatal: unable to access 'https://deploy:{TOKEN}@example.com/r.git/': 403"
    assert _scrub(stderr) == "fatal: unable to access 'https://example.com/r.git/': 403"
    assert _scrub("fatal: repository '/srv/r.git' not found") == (
        "fatal: repository '/srv/r.git' not found"
    )
