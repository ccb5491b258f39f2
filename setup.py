"""Build hook: the data plane's hot modules compiled with mypyc, where that can be done.

Everything else is in pyproject.toml. A wheel (``pip install .``, ``pip wheel .``) gets the
modules below compiled to C extensions by mypyc (part of mypy, a build requirement like
setuptools): the same Python source, type checked and compiled, about a third less CPU per
request (docs/benchmarks.md). The source stays the reference: where mypyc cannot type-check
it, or a C compiler or the Python headers are missing, the build goes on without any of the
extensions and the modules run interpreted, exactly as they read. The extensions stand or fall
together: mypyc puts the code of all of them in one shared library, and a module's shim without
it cannot even be imported. Editable installs (``pip install -e .``, the development venv) are
never compiled, so an edit takes effect at once. ``LBREC_COMPILE=0`` turns compiling off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The request path, client read to client write (proxy/ is linked as lbrec/proxy/).
COMPILED = [
    "lbrec/proxy/answer.py",
    "lbrec/proxy/balancer.py",
    "lbrec/proxy/body.py",
    "lbrec/proxy/downstream.py",
    "lbrec/proxy/exchange.py",
    "lbrec/proxy/fastlane.py",
    "lbrec/proxy/framing.py",
    "lbrec/proxy/http.py",
    "lbrec/proxy/pool.py",
    "lbrec/proxy/reader.py",
    "lbrec/proxy/stats.py",
    "lbrec/proxy/tunnel.py",
    "lbrec/proxy/upstream.py",
]


def _say(message: str) -> None:
    print(f"lbrec: {message}", file=sys.stderr)


class AllOrNothing(build_ext):
    """build_ext where one failed extension means none: the package then runs interpreted."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # CompileError, LinkError, a missing compiler...
            _say(f"compiling the proxy with mypyc failed ({err}): it runs interpreted")
            for extension in self.extensions:  # what was built now, or by an earlier build
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            self.extensions = []


def _extensions() -> list[object]:
    # (setuptools wants the same extensions in every step of one build, metadata included:
    # only the editable wheel, a build of its own, goes without)
    if os.environ.get("LBREC_COMPILE", "1") == "0" or "editable_wheel" in sys.argv:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: the proxy runs interpreted")
        return []
    options = ["--config-file", "mypyc.ini"]
    try:
        return list(mypycify(options + COMPILED, opt_level="3", group_name="lbrec.proxy"))
    except (Exception, SystemExit) as err:  # a type error here must not stop the install
        _say(f"mypyc failed ({err}): the proxy runs interpreted")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": AllOrNothing})
