"""`lbrec pause ROUTE|--all [--message TEXT] [--hold SECONDS] [--retry-after SECONDS]` and
`lbrec resume ROUTE|--all`: maintenance answers (503, Retry-After, the route's page) at once,
without a pass and without touching a container (docs/routes.md)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from ..core.durations import duration_arg
from ..core.errors import UsageError
from .console import Out

if TYPE_CHECKING:
    from ..adapters.workspace import Workspace


def add_maintenance_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """`pause` and `resume` on the command line (cli.py's subparsers)."""
    p = sub.add_parser(
        "pause", parents=[common], help="maintenance: 503 with Retry-After and the page, at once"
    )
    p.add_argument("routes", nargs="*", metavar="ROUTE", help="a host (its routes) or host/path")
    p.add_argument("--all", action="store_true", help="every route (the whole pool)")
    p.add_argument("--message", help="shown on the page (as {{message}}) or as the answer")
    p.add_argument(
        "--hold",
        type=duration_arg,
        metavar="SECONDS",
        help="requests wait up to this long (at most 300s) for `lbrec resume` before the 503",
    )
    p.add_argument(
        "--retry-after", type=duration_arg, metavar="SECONDS", help="(default: the route's, 30)"
    )
    p = sub.add_parser("resume", parents=[common], help="end a maintenance pause")
    p.add_argument("routes", nargs="*", metavar="ROUTE", help="a host (its routes) or host/path")
    p.add_argument("--all", action="store_true", help="every pause")


def _routes(args: argparse.Namespace, workspace: Workspace) -> list[str] | None:
    if args.all and args.routes:
        raise UsageError("name routes or --all, not both")
    if not args.all and not args.routes:
        raise UsageError(
            f"lbrec {args.command}: name a route (host, or host/path) or --all",
            hint=f"`lbrec {args.command} --all`, or `lbrec {args.command} shop.example.com`",
        )
    if args.all:
        return None
    from ..core.maintenance import select_routes

    return select_routes(workspace.load(), args.routes)


def maintenance_command(args: argparse.Namespace, workspace: Workspace, out: Out) -> int:
    from ...proxy.maintenance import Pause
    from ..adapters.maintenance_file import maintenance_path, update_maintenance
    from ..core.maintenance import paused, resumed

    routes = _routes(args, workspace)
    what = "every route" if routes is None else ", ".join(routes)
    if args.command == "pause":
        pause = Pause(
            since=time.time(), message=args.message, hold=args.hold, retry_after=args.retry_after
        )
        state, changed = update_maintenance(workspace.folder, lambda s: paused(s, routes, pause))
        done = f"paused {what}: 503 with Retry-After"
        if args.hold:
            done += f" after holding requests up to {args.hold:g}s"
    else:
        state, changed = update_maintenance(workspace.folder, lambda s: resumed(s, routes))
        done = f"resumed {what}"
        if routes is not None and state.all is not None:
            done += " (but every route is still paused: `lbrec resume --all`)"
    if out.json:
        doc = {
            "ok": True,
            "command": args.command,
            "routes": routes,
            "changed": changed,
            "file": str(maintenance_path(workspace.folder)),
            "state": json.loads(state.to_json()),
        }
        print(json.dumps(doc))
    else:
        out.info(done + ("" if changed else " (already so)"))
    return 0
