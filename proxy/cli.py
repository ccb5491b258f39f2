"""``lbrec proxy`` / ``python -m proxy``: argument parsing, logging, workers, exit codes.

The only module of the proxy that prints or exits. Exit codes: 0 clean stop, 2 bad
arguments or invalid config at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .app import parse_hostport, serve
from .config import ConfigError
from .logs import configure_logging

__all__ = ["build_parser", "main"]

_log = logging.getLogger("lbrec.proxy")


def _hostport(value: str) -> str:
    try:
        parse_hostport(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def version_text() -> str:
    """``lbrec proxy 0.1.0 (event loop uvloop 0.21.0, parser httptools 0.6.4 (llhttp), mypyc,
    Python 3.11.7)``:
    what would serve, without starting anything."""
    import platform

    import httptools

    from .server import code_kind, package_version

    try:
        import uvloop  # noqa: F401

        loop = f"uvloop {package_version('uvloop')}"
    except ImportError:
        loop = "asyncio (uvloop is not installed)"
    return (
        f"lbrec proxy {package_version('lbrec')} (event loop {loop}, parser httptools "
        f"{httptools.__version__} (llhttp), {code_kind()}, Python {platform.python_version()})"
    )


class _Version(argparse.Action):
    """``--version`` on one line (argparse's own action wraps it at the terminal width)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbrec proxy", description="Weighted HTTP reverse proxy fed by backends.json."
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version, event loop and parser"
    )
    parser.add_argument(
        "--config",
        default="config/backends.json",
        type=Path,
        help="backends.json to serve and watch (default: %(default)s)",
    )
    parser.add_argument(
        "--listen",
        type=_hostport,
        default=None,
        help="HOST:PORT for traffic (default: 'listen' of backends.json)",
    )
    parser.add_argument(
        "--admin",
        type=_hostport,
        default=None,
        help="HOST:PORT for the admin listener (default: 'admin' of backends.json)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port with SO_REUSEPORT (default: 1)",
    )
    parser.add_argument(
        "--handoff",
        type=Path,
        default=None,
        metavar="PATH",
        help="Unix socket for a restart without a gap: a proxy already running with the same "
        "PATH hands its listening sockets to this one and drains (one process only)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to let in-flight requests finish on SIGTERM",
    )
    return parser


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _run_worker(
    args: argparse.Namespace, *, admin: bool, worker: int = 0, figures_dir: Path | None = None
) -> int:
    _install_uvloop()
    try:
        asyncio.run(
            serve(
                args.config,
                listen=args.listen,
                admin=args.admin,
                access_log=args.access_log,
                reuse_port=args.workers > 1,
                enable_admin=admin,
                handle_signals=True,
                drain_timeout=args.drain_timeout,
                handoff=args.handoff,
                worker=worker,
                figures_dir=figures_dir,
            )
        )
    except ConfigError as err:
        print(
            f"lbrec proxy: {err}\nhint: fix the file (or run the reconciler) and start again",
            file=sys.stderr,
        )
        return 2
    except OSError as err:
        print(
            f"lbrec proxy: cannot listen: {err}\nhint: is another process on that port?",
            file=sys.stderr,
        )
        return 2
    return 0


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM (and drains) if the supervisor itself is killed."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _run_workers(args: argparse.Namespace) -> int:
    """Fork ``--workers`` processes on one SO_REUSEPORT port; worker 0 serves the admin.

    A supervisor: a worker that dies (crash, OOM kill, ``kill -9``) is forked again after a
    short pause, so the port never loses its listeners for long. A worker that exits 2 (invalid
    config or port in use at start) or crashes 5 times within a minute stops the whole proxy:
    restarting cannot fix that. SIGTERM/SIGINT/SIGHUP are forwarded to every worker.
    """
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    # Where the workers publish their counters for the admin worker's /metrics (removed at exit)
    figures_dir = Path(tempfile.mkdtemp(prefix="lbrec-proxy-figures-"))

    def fork(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # child
            _die_with_parent()
            code = 1
            try:
                code = _run_worker(args, admin=index == 0, worker=index, figures_dir=figures_dir)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for child in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for index in range(args.workers):
        fork(index)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    crashes: list[float] = []
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping or code == 0:
            worst = max(worst, code)
            continue
        now = time.monotonic()
        crashes = [t for t in crashes if now - t < 60] + [now]
        if code == 2 or len(crashes) > 5:
            _log.error("worker %d exited %d; stopping the proxy", index, code)
            worst = max(worst, code if code > 0 else 1)
            forward(signal.SIGTERM, None)
            continue
        _log.warning(
            "worker %d (pid %d) died (exit %d); starting it again",
            index,
            pid,
            code,
            extra={"event": "worker_restart", "worker": index, "exit": code},
        )
        time.sleep(0.5)
        if not stopping:
            fork(index)
    shutil.rmtree(figures_dir, ignore_errors=True)
    return worst


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.handoff is not None and args.workers > 1:
        print("lbrec proxy: --handoff works with one process (--workers 1)", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("lbrec proxy: --workers must be >= 1", file=sys.stderr)
        return 2
    configure_logging(args.log_format, access_log=args.access_log)
    if args.workers == 1:
        return _run_worker(args, admin=True)
    return _run_workers(args)
