"""The flags of the long-running commands, defined once, read into one frozen object.

`lbrec watch`, `lbrec sync` and `lbrec up` share one control loop (runtime/loop.py) and so
one set of flags: each flag is declared here once, with its default, and every command adds
the groups it uses. The mutating one-shot commands (init/add/remove/apply) take the pass
flags (``--lock-timeout``, ``--health-timeout``) from here too. Light on purpose: the CLI
imports this before anything heavy, so that an edit command can announce itself early.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...proxy.config import split_hostport
from ..core.defaults import DEFAULT_FILE
from ..core.durations import duration_arg

__all__ = [
    "QUIET_PERIOD",
    "Command",
    "RuntimeOptions",
    "add_pass_arguments",
    "add_runtime_arguments",
    "hostport_arg",
    "options_from",
]

Command = Literal["watch", "sync", "up"]

# A saved file is applied only once it has stayed unchanged this long: an editor's or a
# script's save in two writes is never applied half-way (measured: two parts 1.5 s apart used
# to destroy both containers; an empty or key-less file is refused anyway, see spec.py).
QUIET_PERIOD = 0.5


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Everything a long-running command was asked for; defaults are the flags' defaults."""

    file: Path = Path(DEFAULT_FILE)
    lock_timeout: float = 300.0
    health_timeout: float = 60.0
    log_format: Literal["text", "json"] = "text"
    # Following the file (watch, up)
    resync: float = 30.0  # 0: no periodic pass
    debounce: float = QUIET_PERIOD
    docker_events: bool = True
    # Following a git branch (sync, up --repo)
    repo: str | None = None
    branch: str = "main"
    path: str = DEFAULT_FILE
    interval: float = 30.0
    workdir: Path | None = None
    git_timeout: float = 120.0
    once: bool = False
    policy: Path | None = None  # the operator's bounds on a commit (core/policy.py)
    notify: str | None = None  # the operator's receiver of refusals (not the commit's)
    # Serving (up)
    access_log: bool = False
    down: bool = False
    # The reconciler's /metrics (watch, sync; `up` serves them on the admin listener)
    metrics: tuple[str, int] | None = None


def hostport_arg(value: str) -> tuple[str, int]:
    """An argparse type: ``127.0.0.1:9464`` or ``[::1]:9464``."""
    try:
        host, port = split_hostport(value)
    except ValueError:
        host = ""
    if not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT like 127.0.0.1:9464, got {value!r}")
    return host, port


def add_pass_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of one pass: every command that changes something takes them."""
    parser.add_argument(
        "--lock-timeout",
        type=duration_arg,
        default=300.0,
        metavar="DURATION",
        help="how long to wait for another lbrec command holding the lock (default 300)",
    )
    parser.add_argument(
        "--health-timeout",
        type=duration_arg,
        default=60.0,
        metavar="DURATION",
        help="how long a new container has to pass its health check (default 60)",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    """The flags of `lbrec <command>` beyond the common -f/-o/--no-color.

    A table more than a function (hence its length): each flag once, grouped by what uses it."""
    add_pass_arguments(parser)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    if command in ("watch", "up"):
        parser.add_argument(
            "--resync",
            type=duration_arg,
            default=30.0,
            metavar="DURATION",
            help="reconcile at least this often, to repair drift (default 30; 0 disables)",
        )
        parser.add_argument(
            "--debounce",
            type=duration_arg,
            default=QUIET_PERIOD,
            metavar="DURATION",
            help="apply a saved file only once it has stayed unchanged this long, so that a "
            f"save in progress is never applied (default {QUIET_PERIOD})",
        )
        parser.add_argument(
            "--no-docker-events",
            dest="docker_events",
            action="store_false",
            help="do not follow `docker events` (drift is then repaired at the next --resync)",
        )
    parser.add_argument(
        "--metrics",
        type=hostport_arg,
        default=None,
        metavar="HOST:PORT",
        help="serve the reconciler's Prometheus metrics on /metrics there"
        + (" (they are on the admin listener's /metrics too)" if command == "up" else ""),
    )
    if command == "up":
        parser.add_argument("--down", action="store_true", help="remove the containers on exit")
        parser.add_argument("--access-log", action="store_true", help="log one line per request")
    group = (
        parser.add_argument_group("GitOps (instead of watching the file)")
        if command == "up"
        else parser
    )
    if command in ("sync", "up"):
        group.add_argument(
            "--repo",
            required=command == "sync",
            help="git URL or path of the config repository (deploy its desired-state file)",
        )
        group.add_argument("--branch", default="main", help="branch to deploy (default main)")
        group.add_argument(
            "--path",
            default=DEFAULT_FILE,
            help=f"the desired-state file inside the repository (default {DEFAULT_FILE})",
        )
        group.add_argument(
            "--policy",
            default=None,
            metavar="FILE",
            help="the operator's policy: what a commit may change (docs/security.md); "
            "without it the safe defaults apply",
        )
        group.add_argument(
            "--notify",
            default=None,
            metavar="URL",
            help="the operator's webhook: told of every commit the policy refuses",
        )
        group.add_argument(
            "--interval",
            type=duration_arg,
            default=30.0,
            metavar="DURATION",
            help="poll and reconcile this often, e.g. 30s, 5m (default 30s)",
        )
    if command == "sync":
        parser.add_argument(
            "--once",
            action="store_true",
            help="deploy the head once and exit: 0 deployed, 1 apply failed, 2 invalid file, "
            "3 no Docker engine, 4 lock timeout, 5 git failed, 6 refused by the policy",
        )
        parser.add_argument(
            "--workdir",
            default=None,
            help="the bare mirror (default .lbrec/repo in the deploy folder)",
        )
        parser.add_argument("--git-timeout", type=duration_arg, default=120.0, metavar="DURATION")


def options_from(args: argparse.Namespace) -> RuntimeOptions:
    """The frozen options of a parsed command line (flags a command lacks keep defaults)."""
    given = {
        name: getattr(args, name)
        for name in RuntimeOptions.__dataclass_fields__
        if getattr(args, name, None) is not None
    }
    given["file"] = Path(given.get("file", DEFAULT_FILE))
    if given.get("workdir") is not None:
        given["workdir"] = Path(given["workdir"]).absolute()
    if given.get("policy") is not None:
        given["policy"] = Path(given["policy"]).absolute()
    return RuntimeOptions(**given)
