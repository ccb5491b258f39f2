"""EDGE. Stage the build context of the `lb` image (proxy.mode: container), offline-friendly.

The image gets the `proxy` package and the wheels of its dependencies, pinned to the versions
installed here (the ones the tests ran with) and downloaded for the image's own Python version.
Nothing is fetched at image build time, so the build works on an air-gapped engine; pip runs on
the host, against whatever index the host's pip is configured for.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from ... import proxy
from ..core.errors import ApplyError
from ..core.render import PROXY_DOCKERFILE, PROXY_STAGE
from .files import atomic_write

__all__ = [
    "PROXY_BASE_IMAGE_ENV",
    "PROXY_REQUIREMENTS",
    "PYTHON_ENV",
    "proxy_base_image",
    "proxy_context_digest",
    "stage_proxy_context",
]

# The proxy's runtime dependencies (and uvloop/httptools for speed when present).
PROXY_REQUIREMENTS = (
    "pydantic",
    "aiohttp",
    "watchdog",
    "prometheus-client",
    "cryptography",
    "h2",  # and its hpack, hyperframe (HTTP/2 on the TLS listener)
    "hpack",
    "hyperframe",
    "uvloop",
    "httptools",
)


def _pins() -> list[str]:
    pins = []
    for name in PROXY_REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


PYTHON_ENV = "LBREC_PROXY_PYTHON"  # the operator's word on the lb base image's Python
PROXY_BASE_IMAGE_ENV = "LBREC_PROXY_BASE_IMAGE"  # the operator's lb base image
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
# Where a base image keeps its python3 (official images: /usr/local/bin; Debian: /usr/bin)
_PYTHON_LINKS = ("/usr/local/bin/python3", "/usr/bin/python3")


def proxy_base_image(env: Mapping[str, str] = os.environ) -> str | None:
    """The lb image's base: the operator's (``$LBREC_PROXY_BASE_IMAGE``, else
    ``$LBREC_BASE_IMAGE``), never the desired-state file's ``base_image``: under ``lbrec sync``
    that file is a commit's, and the lb runs with host networking in front of every request."""
    return env.get(PROXY_BASE_IMAGE_ENV) or env.get("LBREC_BASE_IMAGE") or None


def _checked_version(value: str, where: str) -> str:
    """Anything read about an image is checked before it is used (it becomes a path)."""
    if not _PYTHON_VERSION.match(value):
        raise ApplyError(
            f"{where}: {value[:40]!r} is not a Python version like 3.12",
            backend="lb",
            hint=f"set {PYTHON_ENV}=3.N to the lb base image's Python",
        )
    return value


def _image_python(base_image: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The base image's Python, e.g. '3.11', learned without running the image: the
    operator's ``$LBREC_PROXY_PYTHON``, else the image's ``PYTHON_VERSION`` environment
    (official python images), else the name its ``python3`` link points to (read from a
    created, never started, container). Cached per image id."""
    if explicit := env.get(PYTHON_ENV):
        return _checked_version(explicit.strip(), f"${PYTHON_ENV}")
    if not base_image:
        return "3.12"  # the Dockerfile's default, python:3.12-slim
    image_id = _base_image_id(base_image)
    known = None
    if _IMAGE_ID.match(image_id):
        known = _cache_dir() / "image-python" / image_id.replace(":", "-")
        if known.is_file():
            cached = known.read_text().strip()
            if _PYTHON_VERSION.match(cached):
                return cached
    version = _checked_version(_read_image_python(base_image), f"base image {base_image}")
    if known is not None:
        atomic_write(known, version + "\n")
    return version


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], capture_output=True, timeout=timeout, check=False)


def _read_image_python(base_image: str) -> str:
    """The image's Python from its metadata or its files; nothing of the image runs."""
    try:
        inspect = _docker("image", "inspect", "-f", "{{json .Config.Env}}", base_image)
        if inspect.returncode != 0:
            raise ApplyError(
                f"cannot inspect the lb base image {base_image}",
                backend="lb",
                detail=inspect.stderr.decode(errors="replace").strip(),
            )
        for item in json.loads(inspect.stdout or b"null") or ():
            if isinstance(item, str) and item.startswith("PYTHON_VERSION="):
                return ".".join(item.split("=", 1)[1].split(".")[:2])
        created = _docker("create", "--network", "none", base_image, "/nonexistent")
        if created.returncode != 0:
            raise ApplyError(
                f"cannot read the lb base image {base_image}",
                backend="lb",
                detail=created.stderr.decode(errors="replace").strip(),
            )
        cid = created.stdout.decode().strip()
        try:
            for link in _PYTHON_LINKS:
                copied = _docker("cp", f"{cid}:{link}", "-")
                if copied.returncode == 0:
                    return _link_version(copied.stdout)
        finally:
            _docker("rm", "-f", cid)
    except (subprocess.TimeoutExpired, OSError, ValueError) as err:
        raise ApplyError(
            f"cannot read the lb base image {base_image}", backend="lb", detail=str(err)
        ) from err
    raise ApplyError(
        f"the lb base image {base_image} has no python3 in {' or '.join(_PYTHON_LINKS)}",
        backend="lb",
        hint=f"set {PYTHON_ENV}=3.N, or use an image with python3",
    )


def _link_version(archive: bytes) -> str:
    """PURE. 'python3.11' -> '3.11' from the tar stream `docker cp` gives for a python3 link."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
    target = member.linkname if member is not None and member.issym() else ""
    name = target.rsplit("/", 1)[-1]
    return name.removeprefix("python") if name.startswith("python3.") else name


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
