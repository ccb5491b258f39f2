"""EDGE. Stage the build context of the `lb` image (proxy.mode: container), offline-friendly.

The image gets the `proxy` package and the wheels of its dependencies, pinned to the versions
installed here (the ones the tests ran with) and downloaded for the image's own Python version.
Nothing is fetched at image build time, so the build works on an air-gapped engine; pip runs on
the host, against whatever index the host's pip is configured for.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from ... import proxy
from ..core.errors import ApplyError
from ..core.render import PROXY_DOCKERFILE, PROXY_STAGE
from .files import atomic_write

__all__ = ["PROXY_REQUIREMENTS", "proxy_context_digest", "stage_proxy_context"]

# The proxy's runtime dependencies (and uvloop/httptools for speed when present).
PROXY_REQUIREMENTS = ("pydantic", "aiohttp", "watchdog", "prometheus-client", "uvloop", "httptools")


def _pins() -> list[str]:
    pins = []
    for name in PROXY_REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def _image_python(base_image: str | None) -> str:
    """The base image's Python, e.g. '3.11' (asked once per image id, then cached)."""
    if not base_image:
        return "3.12"  # the Dockerfile's default, python:3.12-slim
    image_id = _base_image_id(base_image).replace(":", "-")
    known = _cache_dir() / "image-python" / image_id if image_id else None
    if known is not None and known.is_file():
        return known.read_text().strip()
    version = _run_image_python(base_image)
    if known is not None:
        atomic_write(known, version + "\n")
    return version


def _run_image_python(base_image: str) -> str:
    try:
        out = subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "python3",
                base_image,
                "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise ApplyError(
            f"cannot run python3 in the base image {base_image}", backend="lb", detail=detail
        ) from err
    return out.stdout.strip()


def _cache_dir() -> Path:
    """Wheels are shared by every deploy folder of this user: downloaded once per version."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lbrec"


def _download(wheels: Path, pins: list[str], py: str) -> None:
    machine = platform.machine()
    platforms = [f"manylinux_2_{n}_{machine}" for n in (36, 34, 31, 28, 17)]
    platforms += [f"manylinux2014_{machine}", "linux_" + machine]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--only-binary=:all:",
        "--python-version",
        py,
        "--implementation",
        "cp",
        "-d",
        str(wheels),
    ]
    for plat in platforms:
        cmd += ["--platform", plat]
    try:
        subprocess.run(cmd + pins, capture_output=True, text=True, timeout=600, check=True)
    except subprocess.CalledProcessError as err:
        tail = "\n".join(err.stderr.strip().splitlines()[-6:])
        raise ApplyError(
            f"downloading the proxy's wheels for Python {py} failed", backend="lb", detail=tail
        ) from err


def _base_image_id(base_image: str | None) -> str:
    if not base_image:
        return "default"
    return subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", base_image],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.strip()


def proxy_context_digest(folder: Path, base_image: str | None) -> str:
    """The digest of the lb image's build context, from its inputs alone: Dockerfile.proxy,
    the base image's id (which fixes its Python, hence the wheels), the pinned versions and
    the proxy package's files. Reads only: check mode (`lbrec diff`) stages nothing, runs no
    container and downloads nothing."""
    dockerfile = folder / PROXY_DOCKERFILE
    if not dockerfile.is_file():
        raise ApplyError(
            f"{dockerfile}: not found; proxy.mode container builds the lb image from it",
            backend="lb",
            hint="copy Dockerfile.proxy from the lbrec repository next to the desired-state file",
        )
    digest = hashlib.sha256(dockerfile.read_bytes())
    digest.update(b"\0base\0" + _base_image_id(base_image).encode())
    digest.update(b"\0pins\0" + "\n".join(_pins()).encode())
    source = Path(proxy.__file__).parent
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def stage_proxy_context(folder: Path, base_image: str | None) -> str:
    """Fill ``folder/dist/lbrec-proxy/current`` (wheels + proxy package); return its digest.

    The wheels come from a per-user cache (``~/.cache/lbrec/proxy-wheels/<python>``), filled
    by one ``pip download`` per set of pinned versions.
    """
    if not (folder / PROXY_DOCKERFILE).is_file():
        raise ApplyError(
            f"{folder / PROXY_DOCKERFILE}: not found; proxy.mode container builds the lb image "
            "from it",
            backend="lb",
            hint="copy Dockerfile.proxy from the lbrec repository next to the desired-state file",
        )
    stage = folder / PROXY_STAGE
    py = _image_python(base_image)
    pins = _pins()
    wheels = _cache_dir() / "proxy-wheels" / py
    marker = wheels / ".pins"
    want = "\n".join(pins) + "\n"
    if not marker.is_file() or marker.read_text() != want:
        if wheels.exists():
            shutil.rmtree(wheels)
        wheels.mkdir(parents=True)
        _download(wheels, pins, py)
        atomic_write(marker, want)
    current = stage / "current"
    if current.exists():
        shutil.rmtree(current)
    shutil.copytree(wheels, current / "wheels", ignore=shutil.ignore_patterns(".pins"))
    source = Path(proxy.__file__).parent
    shutil.copytree(source, current / "proxy", ignore=shutil.ignore_patterns("__pycache__"))
    return proxy_context_digest(folder, base_image)
