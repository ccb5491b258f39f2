"""`lbrec completion bash|zsh|fish`, in the real shells: subcommands, options, and backend
names read from the desired-state file (argcomplete's protocol runs lbrec itself)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

_BIN = str(Path(sys.executable).parent)  # where `lbrec` is installed


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") or os.environ.get("LBREC_REQUIRE_DOCKER"):
            pytest.fail(
                f"{name} is missing and CI must run this test (scripts/setup.sh installs it)"
            )
        pytest.skip(f"needs {name} (apt-get install {name})")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "desired-state.yaml").write_text(
        "backends:\n  - {name: web, port: 9001}\n  - {name: api, port: 9002}\n"
    )
    return tmp_path


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{_BIN}:{os.environ['PATH']}", TERM="dumb")


def _bash(folder: Path, *words: str) -> list[str]:
    line = " ".join(words)
    script = (
        'source <(lbrec completion bash); COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; '
        'read -ra COMP_WORDS <<< "$1"; [[ "$1" == *" " ]] && COMP_WORDS+=(""); '
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _python_argcomplete lbrec; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        [_shell("bash"), "-c", script, "bash", line],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [w.strip() for w in result.stdout.splitlines() if w.strip()]


def test_bash_completes_commands_options_and_backend_names(folder: Path) -> None:
    assert _bash(folder, "lbrec", "rem") == ["remove"]
    assert _bash(folder, "lbrec", "remove", "w") == ["web"]
    assert set(_bash(folder, "lbrec", "remove", "")) >= {"web", "api"}
    assert set(_bash(folder, "lbrec", "completion", "")) >= {"bash", "zsh", "fish"}
    assert "--lock-timeout" in _bash(folder, "lbrec", "apply", "--lock")
    assert _bash(folder, "lbrec", "rollout", "promote", "a") == ["api"]


def test_fish_completes_backend_names(folder: Path) -> None:
    result = subprocess.run(
        [
            _shell("fish"),
            "-c",
            'source (lbrec completion fish | psub); complete -C "lbrec remove "',
        ],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    words = {line.split("\t")[0] for line in result.stdout.splitlines()}
    assert {"web", "api"} <= words, result.stdout


def test_zsh_completes_in_an_interactive_shell(folder: Path) -> None:
    """zsh completes only at a prompt: drive one through a pseudo-terminal and press Tab."""
    zsh = _shell("zsh")
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive zsh without user config
        os.chdir(folder)
        os.execve(zsh, [zsh, "-f", "-i"], _env())

    def read(seconds: float, until: bytes = b"") -> bytes:
        out = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until in out):
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out

    try:
        os.write(fd, b"autoload -U compinit; compinit -u; source <(lbrec completion zsh)\n")
        read(5, until=b"source <(lbrec completion zsh)")
        read(1)
        os.write(fd, b"lbrec remove w\t")
        echoed = read(10, until=b"web")
        assert b"lbrec remove web" in echoed, echoed
    finally:
        os.write(fd, b"\x15exit\n")
        read(2)
        os.close(fd)
        os.waitpid(pid, 0)


def test_completion_script_names_the_command() -> None:
    from lbrec.reconciler.commands.cli import main

    for shell in ("bash", "zsh", "fish"):
        result = subprocess.run(
            [sys.executable, "-m", "lbrec", "completion", shell],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "lbrec" in result.stdout and "_ARGCOMPLETE" in result.stdout
    with pytest.raises(SystemExit):
        main(["completion", "tcsh"])
