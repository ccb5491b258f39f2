"""Issue 20, findings 1 and 2 on the real engine: a commit's base image never runs on the
controller host, and the lb image's base is the operator's (docs/security.md)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbrec.reconciler.adapters import proxy_image
from lbrec.reconciler.adapters.workspace import Workspace
from lbrec.reconciler.core.errors import ApplyError
from lbrec.reconciler.core.spec import parse_spec

from .conftest import BASE_IMAGE, REPO

pytestmark = pytest.mark.docker


def _build(tag: str, dockerfile: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "--build-arg", f"BASE={BASE_IMAGE}", str(folder)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def evil_image(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An image whose python3 prints a directory of the host instead of its version, as the
    review's reproduction did, and records that it ran (it must never run)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me\n")
    tag = f"lbrec-test-evil:{uuid.uuid4().hex[:8]}"
    _build(
        tag,
        "ARG BASE\nFROM ${BASE}\n"
        f"RUN rm /usr/bin/python3 && printf '#!/bin/sh\\necho {victim}\\n' > /usr/bin/python3 "
        "&& chmod 755 /usr/bin/python3\n",
        tmp_path / "evil-ctx",
    )
    try:
        yield tag, victim
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)


def _folder(tmp_path: Path, base_image: str) -> Path:
    folder = tmp_path / "deploy"
    folder.mkdir()
    for name in ("Dockerfile.backend", "Dockerfile.proxy"):
        (folder / name).write_text((REPO / name).read_text())
    (folder / "backend").mkdir()
    (folder / "backend" / "app.py").write_text((REPO / "backend" / "app.py").read_text())
    (folder / "desired-state.yaml").write_text(
        f"project: t20-{uuid.uuid4().hex[:6]}\nbase_image: {base_image}\n"
        "proxy: {mode: container}\nbackends: [{name: a, port: 9001}]\n"
    )
    return folder


def _no_download(wheels: Path, pins: list[str], py: str) -> None:
    (wheels / "downloaded-for").write_text(py)


def test_a_commits_base_image_never_runs_and_deletes_nothing(
    tmp_path: Path, evil_image: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: staging the lb image ran the file's base_image to learn its Python and
    rmtree'd the path it printed. Now the lb's base is the operator's (finding 2) and nothing
    of an image runs."""
    tag, victim = evil_image
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(proxy_image, "_download", _no_download)
    folder = _folder(tmp_path, tag)
    workspace = Workspace.at(folder / "desired-state.yaml")
    desired = parse_spec((folder / "desired-state.yaml").read_text())
    build = workspace.build_info(desired, env={"LBREC_BASE_IMAGE": BASE_IMAGE}, stage=True)
    assert (victim / "precious.txt").read_text() == "keep me\n"
    assert build.proxy_base_image == BASE_IMAGE  # the operator's, not the file's
    staged = folder / "dist" / "lbrec-proxy" / "current" / "wheels" / "downloaded-for"
    assert staged.read_text() == "3.11"  # Debian bookworm's, read from the python3 link
    ran = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"ancestor={tag}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert ran == ""


def test_an_operator_image_with_a_strange_python_is_refused_not_used_as_a_path(
    tmp_path: Path, evil_image: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the operator's image is only read, and what is read is checked (^3\\.\\d{1,2}$)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tag = f"lbrec-test-env:{uuid.uuid4().hex[:8]}"
    _build(tag, "ARG BASE\nFROM ${BASE}\nENV PYTHON_VERSION=../../../x\n", tmp_path / "env-ctx")
    try:
        with pytest.raises(ApplyError, match="is not a Python version"):
            proxy_image._image_python(tag, env={})
        assert proxy_image._image_python(tag, env={"LBREC_PROXY_PYTHON": "3.11"}) == "3.11"
        with pytest.raises(ApplyError, match="LBREC_PROXY_PYTHON"):
            proxy_image._image_python(tag, env={"LBREC_PROXY_PYTHON": "/etc"})
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)
    assert not list((tmp_path / "cache").rglob("x"))
