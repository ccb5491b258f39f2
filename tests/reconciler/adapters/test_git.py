"""GitError says why git failed: git's reason, not its generic closing lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbrec.reconciler.adapters.git import GitError, Mirror, _cause

_SSH_REFUSED = """\
ssh: connect to host git.example.com port 22: Connection refused
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.
"""
_NO_KEY = """\
git@git.example.com: Permission denied (publickey).
fatal: Could not read from remote repository.

Please make sure you have the correct access rights
and the repository exists.
"""


@pytest.mark.parametrize(
    ("stderr", "cause"),
    [
        (_SSH_REFUSED, "ssh: connect to host git.example.com port 22: Connection refused"),
        (_NO_KEY, "git@git.example.com: Permission denied (publickey)."),
        (
            "fatal: couldn't find remote ref refs/heads/nope\n",
            "fatal: couldn't find remote ref refs/heads/nope",
        ),
        (
            "fatal: Could not read from remote repository.\n",
            "fatal: Could not read from remote repository.",
        ),
        ("", "exit code 128"),
    ],
)
def test_the_cause_is_the_telling_line(stderr: str, cause: str) -> None:
    assert _cause(stderr, 128) == cause


def test_a_real_failed_fetch_names_the_reason_and_keeps_the_whole_stderr(tmp_path: Path) -> None:
    mirror = Mirror(str(tmp_path / "nope.git"), tmp_path / "mirror", timeout=30)
    with pytest.raises(GitError) as caught:
        mirror.fetch("main")
    assert "does not appear to be a git repository" in caught.value.message
    assert "Please make sure you have the correct access rights" in caught.value.detail
    assert caught.value.exit_code == 5
