"""The files of the front door's features are checked when the file is loaded: `lbrec
validate` refuses an unreadable htpasswd file, a weak hash, a missing page, with the field and
the file named (issue 23)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lbrec.reconciler.commands.cli import main

BASE = "backends: [{name: web, port: 8000}]\n"


def htpasswd(path: Path, flag: str) -> None:
    tool = shutil.which("htpasswd")
    if tool is None:
        pytest.fail("htpasswd is missing: `bash scripts/setup.sh` installs apache2-utils")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([tool, "-bc", flag, str(path), "admin", "pw"], check=True, timeout=30)


def validate(folder: Path, text: str) -> int:
    (folder / "desired-state.yaml").write_text(text + BASE)
    return main(["validate", "-f", str(folder / "desired-state.yaml")])


ROUTE = "routes:\n  - host: admin.example.com\n    backends: [web]\n"


def test_a_good_setup_validates(tmp_path: Path) -> None:
    htpasswd(tmp_path / "secrets" / "admin.htpasswd", "-B")
    (tmp_path / "errors").mkdir()
    for name in ("maintenance.html", "502.html", "503.html"):
        (tmp_path / "errors" / name).write_text("<h1>x</h1>")
    text = (
        ROUTE
        + "    auth: {basic: {users_file: secrets/admin.htpasswd}, allow: [10.0.0.0/8]}\n"
        + "maintenance: {page: errors/maintenance.html}\n"
        + "error_pages: {502: errors/502.html, 503: ./errors/503.html}\n"
    )
    assert validate(tmp_path, text) == 0


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            ROUTE + "    auth: {basic: {users_file: secrets/none.htpasswd}}\n",
            "routes[0].auth.basic.users_file: {folder}/secrets/none.htpasswd: cannot read",
        ),
        (
            ROUTE + "    auth: {basic: {users_file: secrets/md5.htpasswd}}\n",
            "routes[0].auth.basic.users_file: {folder}/secrets/md5.htpasswd line 1: user "
            "'admin': MD5-crypt ($apr1$, `htpasswd -m`) is refused",
        ),
        (
            "maintenance: {page: errors/missing.html}\n",
            "maintenance.page: {folder}/errors/missing.html: no such file",
        ),
        (
            ROUTE + "    error_pages: {504: errors/big.html}\n",
            "routes[0].error_pages.504: {folder}/errors/big.html: over 256 KiB",
        ),
        (
            "error_pages: {502: errors/page.php}\n",
            "error_pages.502: {folder}/errors/page.php: the extension '.php' gives no content",
        ),
        (
            ROUTE + "    auth: {allow: [203.0.113.0/24, 2001:db8::/129]}\n",
            "routes[0].auth.allow: not an IP network (CIDR): '2001:db8::/129'",
        ),
    ],
)
def test_bad_files_are_refused_with_the_field_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    htpasswd(tmp_path / "secrets" / "md5.htpasswd", "-m")
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "big.html").write_bytes(b"x" * (256 * 1024 + 1))
    (tmp_path / "errors" / "page.php").write_text("x")
    assert validate(tmp_path, text) == 2
    assert named.format(folder=tmp_path) in capsys.readouterr().err
