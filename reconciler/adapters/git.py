"""EDGE. A bare mirror of one branch of a git repository, through the git CLI.

Every call has a timeout, never prompts for credentials, and turns failures into
:class:`GitError` naming git's reason (not only its generic last line; the whole stderr is the
error's detail). The mirror is a bare repository: nothing is ever checked out, files are read
from commits with ``git show <commit>:<path>``.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import LbrecError
from .files import STATE_DIR, state_dir

__all__ = ["CommitInfo", "GitError", "Mirror", "normalize_repo"]

# Set by git for hooks (post-receive runs `lbrec sync`): they would point our git at the wrong
# repository, so they are dropped from the environment of every git call.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[^/\s]+@[^/\s]+:)", re.IGNORECASE)


class GitError(LbrecError):
    """git failed: the repository cannot be fetched or read (retry; check URL and access).

    ``detail``: git's whole stderr (the CLI prints it under the message; the loop logs it)."""

    exit_code = 5
    transient = True

    def __init__(self, message: str, *, detail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CommitInfo:
    commit: str
    author: str
    time: str  # committer date, ISO 8601
    message: str  # the subject line


def normalize_repo(repo: str, base: Path) -> str:
    """A local path becomes absolute (the mirror runs git elsewhere); URLs are kept as given."""
    if repo.startswith("-"):
        raise GitError(f"--repo {repo!r}: must be a path or a URL, not an option")
    if _URL.match(repo):
        return repo
    return str((base / repo).resolve())


class Mirror:
    """``url``'s branches fetched into the bare repository ``workdir`` (created on first use)."""

    def __init__(self, url: str, workdir: Path, *, timeout: float = 120.0) -> None:
        self.url = url
        self.workdir = Path(workdir)
        self.timeout = timeout

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        # Never a prompt; the operator's own GIT_ASKPASS (a script printing a token from a
        # file, docs/operations.md) is kept, as is a credential helper in git's config.
        env.setdefault("GIT_ASKPASS", "")
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        command = ["git", "-C", str(self.workdir), *args]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise GitError(
                f"git {args[0]} timed out after {self.timeout:g}s",
                hint="check the network and the repository URL, or raise --git-timeout",
            ) from err
        except FileNotFoundError as err:
            raise GitError("the git CLI is not installed", hint="install git") from err
        if check and result.returncode != 0:
            stderr = _scrub(result.stderr)  # git may quote the URL, credentials and all
            raise GitError(
                f"git {args[0]} failed: {_cause(stderr, result.returncode)}",
                detail=stderr.strip(),
            )
        return result

    def ensure(self) -> None:
        if (self.workdir / "HEAD").is_file():
            return
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise GitError(
                f"{self.workdir}: exists and is not a git repository",
                hint="remove it, or pass another --workdir",
            )
        if self.workdir.parent.name == STATE_DIR:  # the default, .lbrec/repo: .lbrec is 0700
            self.workdir.parent.parent.mkdir(parents=True, exist_ok=True)
            state_dir(self.workdir.parent.parent)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._git("init", "--bare", "--quiet")

    def fetch(self, branch: str) -> str:
        """Fetch ``branch`` (force, so a rewritten branch is followed); returns its head."""
        if branch.startswith("-") or not branch:
            raise GitError(f"--branch {branch!r}: not a branch name")
        self.ensure()
        ref = f"refs/lbrec/{branch}"
        self._git("fetch", "--quiet", "--no-tags", self.url, f"+refs/heads/{branch}:{ref}")
        return self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").stdout.strip()

    def info(self, commit: str) -> CommitInfo:
        out = self._git("show", "-s", "--format=%H%x00%an <%ae>%x00%cI%x00%s", commit).stdout
        sha, author, when, subject = out.rstrip("\n").split("\x00", 3)
        return CommitInfo(commit=sha, author=author, time=when, message=subject)

    def show(self, commit: str, path: str) -> str | None:
        """The file at ``path`` in ``commit``, or None when the commit has no such file."""
        path = path.removeprefix("./")
        result = self._git("show", f"{commit}:{path}", check=False)
        if result.returncode == 0:
            return result.stdout
        listed = self._git("ls-tree", "--name-only", commit, "--", path, check=False)
        if listed.returncode == 0 and not listed.stdout.strip():
            return None
        raise GitError(
            f"git show {commit[:12]}:{path} failed: {_cause(result.stderr, 1)}",
            detail=result.stderr.strip(),
        )

    def has(self, commit: str) -> bool:
        return self._git("cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0


# git's own diagnostics, in the order that says most: ssh's and the remote's reasons come before
# git's generic closing line ("fatal: Could not read from remote repository.").
_GENERIC = (
    "fatal: could not read from remote repository",
    "please make sure you have the correct access rights",
    "and the repository exists",
)


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"]*@")


def _scrub(text: str) -> str:
    """``text`` with the userinfo of every ``scheme://user:token@`` URL in it cut."""
    return _USERINFO.sub(r"\1", text)


def _cause(stderr: str, code: int) -> str:
    """Why git failed: its lines minus the generic closing ones (``Permission denied
    (publickey)``, ``repository '...' not found``), at most three, joined."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return f"exit code {code}"
    telling = [line for line in lines if not line.lower().startswith(_GENERIC)]
    return "; ".join(telling[:3]) if telling else lines[0]
