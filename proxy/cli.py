"""``lbrec proxy`` / ``python -m proxy``: argument parsing, logging, workers, exit codes.

The only module of the proxy that prints or exits. Exit codes: 0 clean stop, 2 bad
arguments or invalid config at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from proxy.app import parse_hostport, serve
from proxy.config import ConfigError
from proxy.logs import configure_logging

__all__ = ["build_parser", "main"]

_log = logging.getLogger("lbrec.proxy")


def _hostport(value: str) -> str:
    try:
        parse_hostport(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbrec proxy", description="Weighted HTTP reverse proxy fed by backends.json."
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


def _run_worker(args: argparse.Namespace, *, admin: bool) -> int:
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


def _run_workers(args: argparse.Namespace) -> int:
    """Fork ``--workers`` processes on one SO_REUSEPORT port; worker 0 serves the admin."""
    children: list[int] = []
    for index in range(args.workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _run_worker(args, admin=index == 0)
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    return worst


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("lbrec proxy: --workers must be >= 1", file=sys.stderr)
        return 2
    configure_logging(args.log_format, access_log=args.access_log)
    if args.workers == 1:
        return _run_worker(args, admin=True)
    return _run_workers(args)
