"""`pip install lbrec` is enough: the wheel, installed into a fresh virtualenv, runs the demo in
an empty folder (init writes the build files it carries, apply builds and starts them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BASE_IMAGE, REPO, free_ports, remove_project

pytestmark = pytest.mark.docker


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed into a new virtualenv: its bin folder."""
    root = tmp_path_factory.mktemp("packaging")
    # Built from a copy of what git would clone (no stale build/ of an earlier build leaks in)
    source = root / "src"
    listed = _run("git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z")
    for name in filter(None, listed.split("\0")):
        origin, target = REPO / name, source / name
        if not origin.exists() and not origin.is_symlink():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        else:
            shutil.copy2(origin, target)
    dist = str(root / "dist")
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, str(source))
    wheel = next((root / "dist").glob("lbrec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lbrec/reconciler/assets/demo/Dockerfile.backend" in names, names
    # one installed package: nothing of a generic name at the top of site-packages
    tops = {name.split("/")[0] for name in names if not name.startswith("lbrec-")}
    assert tops == {"lbrec"}, tops
    _run(sys.executable, "-m", "venv", str(root / "venv"))
    pip = root / "venv" / "bin" / "pip"
    # proxy.py (PyPI) installs a top-level package `proxy`: it used to shadow lbrec's
    _run(str(pip), "install", "-q", str(wheel), "proxy.py")
    _run(str(pip), "check")
    return root / "venv" / "bin"


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "shop"
    folder.mkdir()
    name = f"lbrec-pk-{os.getpid()}-{tmp_path.name[-6:]}".lower().replace("_", "-")
    try:
        yield folder, name
    finally:
        remove_project(name)


def test_a_plain_pip_install_runs_the_demo_in_an_empty_folder(
    installed: Path, empty: tuple[Path, str]
) -> None:
    folder, name = empty
    # Outside the checkout, with nothing of it on the path: only the installed wheel runs.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(LBREC_BASE_IMAGE=BASE_IMAGE, NO_COLOR="1", PATH=f"{installed}:{env['PATH']}")
    (port,) = free_ports(1)
    lbrec = str(installed / "lbrec")
    (folder / "desired-state.yaml").write_text(f"project: {name}\nbackends: []\n")
    _run(lbrec, "init", f"web:{port}:1", cwd=folder, env=env)
    for written in (
        "Dockerfile.backend",
        "backend/app.py",
        ".dockerignore",
        "desired-state.schema.json",
    ):
        assert (folder / written).is_file(), written
    assert (folder / "backend/app.py").read_bytes() == (REPO / "backend/app.py").read_bytes()
    pool = json.loads((folder / "config/backends.json").read_text())
    [entry] = pool["backends"]
    with urllib.request.urlopen(entry["url"] + "/", timeout=10) as response:
        assert response.headers["X-Backend"] == "web"
    assert (
        subprocess.run(
            [lbrec, "diff"], cwd=folder, env=env, capture_output=True, check=False
        ).returncode
        == 0
    )
    assert _run(lbrec, "proxy", "--version", env=env).startswith("lbrec proxy ")
    # beside proxy.py's own `proxy` package, lbrec's proxy is the one `lbrec proxy` runs
    python = str(installed / "python")
    other = _run(python, "-c", "import proxy, lbrec.proxy; print(proxy.__file__)", env=env)
    assert "lbrec" not in other
    assert _run(python, "-m", "lbrec", "--version", env=env).startswith("lbrec ")
