"""The `lbrec` command: the composition root. Printing and exiting happen in ``commands/``
only (tests/test_architecture.py); the long-running commands log instead.

Exit codes (documented in docs/cli.md):
  0  success; for `diff` and `apply --check`: in sync
  1  `diff`/`apply --check`: changes pending; other commands: apply failed for a backend
  2  bad input: malformed or invalid file or argument, unknown backend
  3  Docker engine or Compose v2 unavailable
  4  timed out waiting for the lock held by another lbrec command
  5  git failed (`lbrec sync`)
  130 interrupted
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Light imports only: the engine, Docker and pydantic load when a command needs them, so that
# an edit command reaches the lock (and announces itself to a slow pass) early.
from ..adapters.lock import Held, announced, project_lock, waiting_editor
from ..core.defaults import DEFAULT_FILE
from ..core.errors import LbrecError
from ..runtime.options import add_pass_arguments, add_runtime_arguments, options_from
from .console import Out
from .edit import edit_file
from .maintenance import add_maintenance_parsers, maintenance_command
from .rollout import rollout_command

if TYPE_CHECKING:
    from ..adapters.workspace import Workspace
    from ..core.report import Report
    from ..runtime.passes import DockerFactory

__all__ = ["main"]


def _version() -> str:
    try:
        return importlib.metadata.version("lbrec")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _route_feature_arguments(p: argparse.ArgumentParser) -> None:
    """`lbrec add`'s flags for the route's features (commands/edit.py route_features)."""
    route = p.add_argument_group("the route's features (with --host; docs/routes.md)")
    route.add_argument("--compress", action="store_true", help="gzip, br, zstd for text answers")
    route.add_argument("--sticky", metavar="cookie:NAME|header:NAME", help="affinity")
    route.add_argument(
        "--rate-limit", metavar="N/PERIOD", help="per client, e.g. 100/1s (429 beyond)"
    )
    route.add_argument("--burst", type=int, metavar="N", help="with --rate-limit: bucket size")
    route.add_argument("--max-body", metavar="SIZE", help="request bodies up to, e.g. 10m (413)")
    route.add_argument(
        "--allow", action="append", metavar="CIDR", help="only these clients (403); repeatable"
    )
    route.add_argument("--basic-auth", metavar="HTPASSWD", help="bcrypt/argon2 htpasswd file")


def _parser() -> argparse.ArgumentParser:
    # up/watch/sync log (--log-format): they take -f only, no -o or --no-color to ignore.
    file_only = argparse.ArgumentParser(add_help=False)
    file_only.add_argument(
        "-f",
        "--file",
        default=os.environ.get("LBREC_FILE", DEFAULT_FILE),
        help=f"desired-state file (default: $LBREC_FILE or {DEFAULT_FILE})",
    )
    common = argparse.ArgumentParser(add_help=False, parents=[file_only])
    common.add_argument("-o", "--output", choices=("text", "json"), default="text")
    common.add_argument("--no-color", action="store_true", help="never colour (also NO_COLOR=1)")
    mutating = argparse.ArgumentParser(add_help=False)
    add_pass_arguments(mutating)
    editing = argparse.ArgumentParser(add_help=False, parents=[mutating])
    editing.add_argument("--no-apply", action="store_true", help="only edit the desired-state file")

    parser = argparse.ArgumentParser(
        prog="lbrec", description="Declarative weighted HTTP load balancer over Docker backends."
    )
    parser.add_argument("--version", action="version", version=f"lbrec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("init", parents=[common, editing], help="write the backends, then apply")
    p.add_argument("backends", nargs="+", metavar="NAME:PORT:WEIGHT")
    p = sub.add_parser("add", parents=[common, editing], help="add or update backends, then apply")
    p.add_argument("backends", nargs="+", metavar="NAME:PORT:WEIGHT")
    p.add_argument("--image", help="run this image (any image serving HTTP on PORT)")
    p.add_argument("--replicas", type=int, help="instances of the backend (default 1)")
    p.add_argument(
        "--host",
        help="also route this host to it (shop.example.com, *.example.com): `routes:`",
    )
    p.add_argument("--path", help="with --host: only this path prefix, e.g. /api/ (default /)")
    _route_feature_arguments(p)
    p = sub.add_parser("remove", parents=[common, editing], help="remove backends, then apply")
    keys = p.add_argument("keys", nargs="+", metavar="NAME|PORT")
    keys.completer = _backend_names  # type: ignore[attr-defined]  # argcomplete reads it
    p = sub.add_parser("apply", parents=[common, mutating], help="converge to the desired state")
    p.add_argument("--check", action="store_true", help="plan only (same as diff)")
    sub.add_parser("diff", parents=[common], help="show the plan; exit 0 in sync, 1 pending")
    p = sub.add_parser("validate", parents=[common], help="validate the desired-state file")
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="also check it against the operator's policy, as `lbrec sync --policy` would "
        "(exit 6 when refused)",
    )
    sub.add_parser("schema", help="print the JSON Schema of the desired-state file")
    p = sub.add_parser("status", parents=[common], help="backends, containers and the routed pool")
    p.add_argument(
        "--history",
        nargs="?",
        const=20,
        type=int,
        metavar="N",
        help="the last N passes from the audit log instead (default 20)",
    )
    p = sub.add_parser(
        "certs", parents=[common], help="the TLS certificates: names, expiry, next renewal"
    )
    p.add_argument("--renew", metavar="NAME", help="order a new certificate for NAME now (ACME)")
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=120.0,
        help="wait this long for another order of this folder (default 120s)",
    )
    sub.add_parser("proxy", add_help=False, help="run the load balancer (see `lbrec proxy --help`)")
    p = sub.add_parser(
        "rollout", parents=[common], help="a canary in progress: status, promote, abort"
    )
    p.add_argument("action", choices=("status", "promote", "abort"))
    backend = p.add_argument(
        "backend", nargs="?", help="the backend (default: the one in progress)"
    )
    backend.completer = _backend_names  # type: ignore[attr-defined]  # argcomplete reads it
    p.add_argument("--full", action="store_true", help="promote: skip every remaining step")
    add_maintenance_parsers(sub, common)
    p = sub.add_parser(
        "up", parents=[file_only], help="apply, serve the proxy and watch, in the foreground"
    )
    add_runtime_arguments(p, "up")
    p = sub.add_parser(
        "watch", parents=[file_only], help="reconcile on every change and every --resync"
    )
    add_runtime_arguments(p, "watch")
    p = sub.add_parser("sync", parents=[file_only], help="GitOps: deploy a git branch")
    add_runtime_arguments(p, "sync")
    p = sub.add_parser(
        "completion",
        help="print the shell completion script: "
        "`source <(lbrec completion bash)`, or see docs/cli.md for zsh and fish",
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"))
    return parser


def _backend_names(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    """Completion of `remove` and `rollout ... BACKEND`: the names in the desired-state file
    (read as plain YAML: a half-edited file still completes what it can)."""
    import yaml

    try:
        with open(getattr(parsed_args, "file", None) or DEFAULT_FILE, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return []
    backends = doc.get("backends") if isinstance(doc, dict) else None
    names = [str(b["name"]) for b in backends or () if isinstance(b, dict) and "name" in b]
    return [n for n in names if n.startswith(prefix)]


def main(argv: Sequence[str] | None = None, *, docker: DockerFactory | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["proxy"]:
        from ...proxy.cli import main as proxy_main

        return proxy_main(args_list[1:])
    parser = _parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (argcomplete's protocol)
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(args_list)
    with contextlib.ExitStack() as stack:
        if args.command in ("init", "add", "remove") and not args.no_apply:
            # Before anything slow: a pass stuck in a rollout starts yielding now.
            folder = Path(args.file).absolute().parent
            args.announced = stack.enter_context(announced(folder, f"lbrec {args.command}"))
        if docker is None:
            from ..adapters.engines.auto import engine_for

            docker = engine_for
        return _run(args, docker)


def _run(args: argparse.Namespace, docker: DockerFactory) -> int:
    color = (
        sys.stdout.isatty()
        and not os.environ.get("NO_COLOR")
        and not getattr(args, "no_color", False)
    )
    out = Out(json_mode=getattr(args, "output", "text") == "json", color=bool(color))
    try:
        return _dispatch(args, out, docker)
    except LbrecError as err:
        if out.json:  # stdout stays one JSON document, also on failure
            print(
                json.dumps(
                    {
                        "ok": False,
                        "command": args.command,
                        "error": err.message,
                        "hint": err.hint,
                        "exit_code": err.exit_code,
                    }
                )
            )
        out.err(f"lbrec {args.command}: error: {err.message}")
        if err.hint:
            out.err(f"  hint: {err.hint}")
        detail = getattr(err, "detail", "")
        for line in detail.splitlines():
            out.err(f"    {line}")
        return err.exit_code
    except KeyboardInterrupt:
        out.err("interrupted")
        return 130


def _dispatch(args: argparse.Namespace, out: Out, docker: DockerFactory) -> int:
    command: str = args.command
    if command == "completion":
        from argcomplete.shell_integration import shellcode

        print(shellcode(["lbrec"], shell=args.shell), end="")
        return 0
    if command == "schema":
        from ..core.spec import schema_text

        print(schema_text(), end="")
        return 0
    if command in ("up", "watch", "sync"):
        from ..runtime.sync import run_sync
        from ..runtime.up import run_up
        from ..runtime.watch import run_watch

        run = {"up": run_up, "watch": run_watch, "sync": run_sync}[command]
        return run(options_from(args), docker)
    from ..adapters.workspace import Workspace

    workspace = Workspace.at(args.file)
    if command == "validate":
        desired = workspace.load()
        if args.policy is not None:
            from ..adapters.policy_files import enforce
            from ..core.policy import load_policy

            policy = load_policy(Path(args.policy))
            enforce(desired, policy, workspace.folder, source=str(args.file))
        if out.json:
            doc = {"ok": True, "file": str(args.file), "backends": len(desired.backends)}
            print(json.dumps(doc))
        else:
            out.info(f"{args.file}: valid ({len(desired.backends)} backends)")
        return 0
    if command in ("rollout", "pause", "resume"):
        act = rollout_command if command == "rollout" else maintenance_command
        return act(args, workspace, out)
    if command == "certs":
        from .certs import certs_command

        return certs_command(args, workspace, out)
    if command == "status":
        from .status import show_history, show_status

        if args.history is not None:
            return show_history(workspace, args.history, json_mode=out.json)
        return show_status(workspace, docker, json_mode=out.json)
    if command == "diff" or (command == "apply" and args.check):
        from ..engine.converge import converge

        desired = workspace.load()
        report = converge(workspace, docker(workspace, desired), desired=desired, check=True)
        _show(report, out)
        return 0 if report.plan.in_sync else 1
    return _mutate(command, args, workspace, out, docker)


def _mutate(
    command: str, args: argparse.Namespace, workspace: Workspace, out: Out, docker: DockerFactory
) -> int:
    """init/add/remove/apply: (edit the file, then) one pass; if a waiting edit cuts the pass
    short, let it go first and carry on behind it."""
    from ..core.output import BuildProgress, format_plan, format_recap, report_json
    from ..runtime.passes import run_pass

    edit = command in ("init", "add", "remove")
    if edit and args.no_apply:
        with project_lock(
            workspace.folder,
            command=f"lbrec {command}",
            timeout=args.lock_timeout,
            on_wait=out.err,
            preempt=True,
        ):
            edit_file(command, args, workspace, out, docker)
        return 0
    announced = getattr(args, "announced", False)
    for attempt in range(_PREEMPTIONS + 1):

        def prepare(held: Held, first: bool = attempt == 0) -> set[str] | None:
            if not (edit and first):
                return None
            edited = edit_file(command, args, workspace, out, docker)
            # An edit that cut another pass short (an emergency change while a rollout hangs)
            # carries out only what it changed; the preempted command does the rest after it.
            return edited if held.preempted else None

        report = run_pass(
            workspace,
            docker,
            command=f"lbrec {command}",
            lock_timeout=args.lock_timeout,
            health_timeout=args.health_timeout,
            on_wait=out.err,
            preempt=edit and attempt == 0,
            announced=announced and attempt == 0,
            prepare=prepare,
            progress=BuildProgress(out.info, out.style).line,  # stderr under -o json
            on_plan=None if out.json else lambda p: out.info(format_plan(p, out.style) + "\n"),
            hold_rolled_back=False,  # a person asked: a rolled-back version is tried again
        )
        if not report.preempted:
            break
        # Cut short by an edit that waited for the lock: let it take the lock (its marker goes
        # when it has it), then carry on behind it.
        out.err(f"lbrec {command}: preempted by a waiting edit; carrying on after it")
        deadline = time.monotonic() + args.lock_timeout
        while waiting_editor(workspace.folder) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    if out.json:
        print(report_json(report))
    else:
        print(format_recap(report, out.style))
    return 1 if report.failed or report.preempted else 0  # cut short too often: not done


# How often one command lets a waiting edit go first before it reports the preemption.
_PREEMPTIONS = 3


def _show(report: Report, out: Out) -> None:
    from ..core.output import format_plan, format_recap, report_json

    if out.json:
        print(report_json(report))
        return
    print(format_plan(report.plan, out.style))
    if not report.check:
        print(format_recap(report, out.style))


if __name__ == "__main__":
    raise SystemExit(main())
