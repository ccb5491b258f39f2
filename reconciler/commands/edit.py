"""`lbrec init|add|remove`: the file edited (comments and key order kept), validated whole and
checked against everything an apply could fail on before it is written."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Any

from ..core.errors import SpecError, UsageError
from .console import Out

if TYPE_CHECKING:
    from ..adapters.workspace import Workspace
    from ..core.spec import DesiredState
    from ..runtime.passes import DockerFactory


def edit_file(
    command: str,
    args: argparse.Namespace,
    workspace: Workspace,
    out: Out,
    docker: DockerFactory,
) -> set[str]:
    """Edit the file; the names of the backends whose entry changed (or went)."""
    from ..adapters.files import read_text_or_none
    from ..core.edit import add_backend, add_route, init_document, remove_backend
    from ..core.spec import parse_backend_arg, parse_spec, project_from_folder

    path = workspace.spec_file
    source = str(args.file)
    text = read_text_or_none(path)
    if command == "init":
        backends = [parse_backend_arg(a) for a in args.backends]
        project = None if text is not None else project_from_folder(workspace.folder)
        new = init_document(text, backends, source=source, project=project)
        verb = "initialised" if text is None else "re-initialised"
        message = f"{source}: {verb} with {len(backends)} backends"
    else:
        if text is None:
            raise SpecError(f"{source}: no such file", hint="create it with `lbrec init ...`")
        new, done = text, []
        if command == "add":
            extra = {
                key: value
                for key, value in (("image", args.image), ("replicas", args.replicas))
                if value is not None
            }
            if args.path is not None and args.host is None:
                raise UsageError("--path: give the route's --host too")
            features = route_features(args)
            for arg in args.backends:
                backend = parse_backend_arg(arg, **extra)
                new, what = add_backend(new, backend, source=source)
                done.append(f"{what} {arg}")
                if args.host is not None:
                    new, routed = add_route(
                        new,
                        backend.name,
                        host=args.host,
                        path=args.path or "/",
                        source=source,
                        features=features,
                    )
                    if routed != "unchanged":
                        done.append(f"route {routed} {args.host}{args.path or '/'}")
        else:
            for key in args.keys:
                new, name = remove_backend(new, key, source=source)
                done.append(f"removed {name}")
        message = f"{source}: " + ", ".join(done)
    # Validate the whole result, and everything an apply could fail on before changing
    # anything, before writing: a refused edit leaves the file as it was.
    desired = parse_spec(new, source=source)
    workspace.check_files(desired, source=source)
    _write(
        workspace,
        desired,
        new,
        init=command == "init",
        check=not args.no_apply,
        out=out,
        docker=docker,
    )
    out.info(message)
    before: dict[str, object] = {}
    if text is not None:
        try:
            before = {b.name: b for b in parse_spec(text, source=source).backends}
        except SpecError:
            return {b.name for b in desired.backends}  # no valid before: all of it is new
    after = {b.name: b for b in desired.backends}
    return {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}


_RATE = re.compile(r"^([0-9]+)/([0-9]*[a-z]+)$")


def route_features(args: argparse.Namespace) -> dict[str, Any]:
    """The route's fields from `lbrec add`'s flags (checked by the schema with the rest of the
    file: a bad value is refused with its field named). Only with --host."""
    fields: dict[str, Any] = {}
    if getattr(args, "compress", False):
        fields["compress"] = True
    if getattr(args, "sticky", None) is not None:
        fields["sticky"] = args.sticky
    rate = getattr(args, "rate_limit", None)
    if rate is not None:
        match = _RATE.match(rate)
        if match is None:
            raise UsageError(f"--rate-limit: {rate!r}: give REQUESTS/PERIOD, e.g. 100/1s or 600/1m")
        limit: dict[str, Any] = {"requests": int(match[1]), "per": match[2]}
        if args.burst is not None:
            limit["burst"] = args.burst
        fields["rate_limit"] = limit
    elif getattr(args, "burst", None) is not None:
        raise UsageError("--burst: give --rate-limit too")
    if getattr(args, "max_body", None) is not None:
        fields["max_body"] = args.max_body
    auth: dict[str, Any] = {}
    if getattr(args, "allow", None):
        auth["allow"] = list(args.allow)
    if getattr(args, "basic_auth", None) is not None:
        auth["basic"] = {"users_file": args.basic_auth}
    if auth:
        fields["auth"] = auth
    if fields and getattr(args, "host", None) is None:
        names = ("compress", "sticky", "rate_limit", "max_body", "allow", "basic_auth")
        given = [n for n in names if getattr(args, n, None) not in (None, False, [])]
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags}: a route's feature: give the route's --host too")
    return fields


def _write(
    workspace: Workspace,
    desired: DesiredState,
    text: str,
    *,
    init: bool,
    check: bool,
    out: Out,
    docker: DockerFactory,
) -> None:
    """Check everything an apply could fail on, then write. init also prepares the folder:
    the demo backend's build files it needs (from the package, so that `pip install lbrec` in
    an empty folder is enough; removed again if the edit is refused) and the JSON Schema."""
    from ..adapters.demo_files import needed, remove_written, write_demo_files
    from ..adapters.files import atomic_write
    from ..core.defaults import SCHEMA_FILE
    from ..core.spec import schema_text
    from ..engine.converge import preflight

    folder = workspace.spec_file.parent
    written = write_demo_files(folder, needed(desired)) if init else []
    try:
        if check:
            preflight(workspace, docker(workspace, desired), desired)
    except BaseException:
        remove_written(folder, written)
        raise
    if written:
        out.info(f"{folder}: wrote {', '.join(written)} (the demo backend's build files)")
    if folder.is_dir():
        if init:  # editors check the file against it (the file's first line)
            atomic_write(folder / SCHEMA_FILE, schema_text())
        atomic_write(workspace.spec_file, text)
