"""EDGE. The demo backend's build files, carried in the package: `lbrec init` writes them into a
folder that lacks them, so that `pip install lbrec` in an empty folder is enough.

In the repository they are the top-level files themselves (``reconciler/assets/demo/`` holds
symbolic links to them); in a wheel, copies. Never overwritten: a folder's own
``Dockerfile.backend`` or ``backend/app.py`` is the user's.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..core.spec import DesiredState
from .files import atomic_write

__all__ = ["DEMO_FILES", "needed", "remove_written", "write_demo_files"]

# file in the deploy folder -> its asset in the package
DEMO_FILES: dict[str, str] = {
    "Dockerfile.backend": "Dockerfile.backend",
    "backend/app.py": "backend-app.py.txt",
    "Dockerfile.proxy": "Dockerfile.proxy",
    ".dockerignore": "dockerignore",
}


def needed(desired: DesiredState) -> list[str]:
    """The files a deploy folder needs for ``desired``: the demo backend's (a backend without
    image or build, or no backend yet) and the lb image's (proxy.mode: container)."""
    names = []
    if not desired.backends or any(b.demo for b in desired.backends):
        names += ["Dockerfile.backend", "backend/app.py", ".dockerignore"]
    if desired.proxy.mode == "container":
        names += ["Dockerfile.proxy", ".dockerignore"]
    return list(dict.fromkeys(names))


def write_demo_files(folder: Path, names: list[str]) -> list[str]:
    """Write those of ``names`` that ``folder`` lacks (atomically, each); returns what was
    written. Nothing when the folder does not exist (the edit then fails on its own)."""
    if not folder.is_dir():
        return []
    assert __package__  # lbrec.reconciler.adapters: the assets are the reconciler package's
    assets = files(__package__.rpartition(".")[0]) / "assets"
    written: list[str] = []
    try:
        for name in [n for n in names if not (folder / n).exists()]:
            text = (assets / "demo" / DEMO_FILES[name]).read_text(encoding="utf-8")
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, text)
            written.append(name)
    except BaseException:
        remove_written(folder, written)
        raise
    return written


def remove_written(folder: Path, written: list[str]) -> None:
    """Undo :func:`write_demo_files` (a refused init leaves the folder as it was)."""
    for name in reversed(written):
        (folder / name).unlink(missing_ok=True)
        parent = (folder / name).parent
        if parent != folder and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
