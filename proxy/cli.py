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
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .app import ServeInfo, ServeOptions, parse_hostport, serve
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
    up = parser.add_argument_group(
        "under a supervisor (lbrec up binds the sockets and holds them across a restart)"
    )
    up.add_argument(
        "--listen-fd",
        type=int,
        default=None,
        metavar="N",
        help="serve traffic on this inherited listening socket (instead of --listen)",
    )
    up.add_argument(
        "--admin-fd",
        type=int,
        default=None,
        metavar="N",
        help="serve the admin listener on this inherited socket (with --listen-fd; "
        "without it, no admin listener)",
    )
    up.add_argument(
        "--tls-fd",
        type=int,
        default=None,
        metavar="N",
        help="the supervisor holds the TLS listener: serve this inherited socket when it "
        "listens at the file's tls.listen (-1: none yet); never bind one here",
    )
    up.add_argument(
        "--ready-fd",
        type=int,
        default=None,
        metavar="N",
        help="write 'ready' to this pipe once serving, then close it",
    )
    up.add_argument(
        "--deployment",
        default=None,
        metavar="PROJECT:FILE",
        help="serve only a pool stamped by a pass of this project and desired-state file; "
        "until one is written, answer 503 with the reason",
    )
    up.add_argument(
        "--control-socket",
        type=Path,
        default=None,
        metavar="PATH",
        help="lbrec up's Unix socket: POST /-/sync is forwarded there, its /metrics appended",
    )
    up.add_argument(
        "--figures-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="(a worker without --admin-fd) publish counters here for the admin one's /metrics",
    )
    up.add_argument("--worker", type=int, default=0, metavar="K", help="this worker's index")
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


def _inherited(fd: int | None, what: str) -> socket.socket | None:
    """A listening TCP socket handed down by the supervisor as file descriptor ``fd``."""
    if fd is None:
        return None
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise OSError(f"{what} {fd} is not a listening TCP socket")
    sock.setblocking(False)
    return sock


def _ready_pipe(fd: int | None) -> Callable[[ServeInfo], None] | None:
    if fd is None:
        return None

    def ready(_info: ServeInfo) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b"ready\n")
            os.close(fd)

    return ready


def _deployment(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    project, sep, file = value.partition(":")
    if not sep or not project or not file:
        raise ValueError(f"--deployment: expected PROJECT:FILE, got {value!r}")
    return project, file


def _run_worker(
    args: argparse.Namespace, *, admin: bool, worker: int = 0, figures_dir: Path | None = None
) -> int:
    _install_uvloop()
    try:
        listen_sock = _inherited(args.listen_fd, "--listen-fd")
        admin_sock = _inherited(args.admin_fd, "--admin-fd") if admin else None
        if args.admin_fd is not None and admin_sock is None:
            os.close(args.admin_fd)  # a worker without the admin listener
        held = args.tls_fd is not None
        tls_sock = _inherited(args.tls_fd, "--tls-fd") if held and args.tls_fd >= 0 else None
        asyncio.run(
            serve(
                args.config,
                ServeOptions(
                    listen=args.listen,
                    admin=args.admin,
                    access_log=args.access_log,
                    reuse_port=args.workers > 1,
                    enable_admin=admin,
                    handle_signals=True,
                    drain_timeout=args.drain_timeout,
                    handoff=args.handoff,
                    worker=worker,
                    workers=args.workers,
                    figures_dir=figures_dir,
                    listen_sock=listen_sock,
                    admin_sock=admin_sock,
                    tls_sock=tls_sock,
                    tls_held=held,
                    deployment=_deployment(args.deployment),
                    control_socket=args.control_socket,
                ),
                ready=_ready_pipe(args.ready_fd),
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
        return _run_worker(args, admin=True, worker=args.worker, figures_dir=args.figures_dir)
    return _run_workers(args)
