"""`lbrec status`: desired backends beside their containers, the routed pool and the proxy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ...proxy.config import ConfigError, load_config
from ..adapters.audit import AUDIT_FILE, read_history
from ..adapters.proxy_admin import proxy_generation
from ..adapters.records import read_deployed
from ..adapters.repair_records import crash_loop_holds
from ..adapters.rollout_control import rolled_back
from ..adapters.workspace import Workspace
from ..core.labels import REVISION, SWARM_NODE
from ..core.ports import DockerPort
from ..core.spec import BackendSpec, DesiredState
from ..core.state import ObservedContainer
from .certs import certificate_status, print_certificates

__all__ = ["collect_status", "show_history", "show_status"]


def collect_status(
    workspace: Workspace, docker: Callable[[Workspace, DesiredState], DockerPort]
) -> dict[str, Any]:
    desired = workspace.load()
    port = docker(workspace, desired)
    port.check()
    containers = port.observe()
    pool, pool_text = workspace.read_pool()
    pool_problem: str | None = None
    if pool is None:
        pool_problem = "missing"
        if pool_text is not None:
            try:
                load_config(workspace.pool_file)
            except ConfigError as err:
                pool_problem = f"invalid: {err}"
    routed = {e.name: e.weight for e in pool.backends} if pool else {}
    routed_urls = {e.url for e in pool.backends} if pool else set()
    names = [b.name for b in desired.backends]
    names += sorted({c.backend for c in containers} - set(names))
    rows = [
        _backend_row(
            name,
            desired.backend(name),
            sorted((c for c in containers if c.backend == name), key=lambda c: c.name),
            routed.get(name),
            routed_urls,
        )
        for name in names
    ]
    proxy_gen = proxy_generation(desired.admin)
    return {
        "file": str(workspace.spec_file),
        "project": desired.project,
        "generation": pool.generation if pool else None,
        "pool_problem": pool_problem,
        "proxy": None if proxy_gen is None else {"admin": desired.admin, "generation": proxy_gen},
        "deployed": read_deployed(workspace.folder),  # credentials cut, also from old records
        "rolled_back": rolled_back(workspace.folder),
        "crash_loops": crash_loop_holds(workspace.folder),
        "backends": rows,
        # names, issuer, expiry, next renewal, last error: never a key (commands/certs.py)
        "certificates": certificate_status(workspace, desired),
    }


def _backend_row(
    name: str,
    spec: BackendSpec | None,
    mine: list[ObservedContainer],
    routed_weight: int | None,
    routed_urls: set[str],
) -> dict[str, Any]:
    c = mine[0] if mine else None
    return {
        "backend": name,
        "desired": spec is not None,
        "weight": spec.weight if spec else None,
        "routed_weight": routed_weight,
        "port": spec.port if spec else None,
        "state": (c.state + (f" ({c.health})" if c.health else "")) if c else "missing",
        "image": c.image if c else None,
        "since": c.started_at if c else None,
        "revision": c.labels.get(REVISION) if c else None,
        "container": c.id[:12] if c else None,
        "replicas": spec.replicas if spec else None,
        "instances": [
            {
                "name": i.name,
                "container": i.id[:12],
                "endpoint": i.endpoint,
                "routed": i.url is not None and i.url in routed_urls,
                "state": i.state + (f" ({i.health})" if i.health else ""),
                "image": i.image,
                "since": i.started_at,
                "revision": i.labels.get(REVISION),
                "node": i.labels.get(SWARM_NODE),  # engine: swarm: the task's node
            }
            for i in mine
        ],
    }


def show_status(
    workspace: Workspace,
    docker: Callable[[Workspace, DesiredState], DockerPort],
    *,
    json_mode: bool,
) -> int:
    status = collect_status(workspace, docker)
    if json_mode:
        print(json.dumps(status, indent=2))
        return 0
    _print_table(status["backends"])
    _print_footer(status)
    if status["certificates"]:
        print("\ncertificates:")
        print_certificates(status["certificates"])
    return 0


def _print_table(backends: list[dict[str, Any]]) -> None:
    headers = ["BACKEND", "WEIGHT", "ROUTED", "PORT", "INSTANCE", "ENDPOINT", "STATE", "SINCE"]
    nodes = any(i.get("node") for row in backends for i in row["instances"])
    if nodes:  # engine: swarm
        headers.append("NODE")
    table = [headers]
    for row in backends:
        head = [
            row["backend"] + ("" if row["desired"] else " (orphan)"),
            "-" if row["weight"] is None else str(row["weight"]),
            "-" if row["routed_weight"] is None else str(row["routed_weight"]),
            "-" if row["port"] is None else str(row["port"]),
        ]
        if not row["instances"]:
            table.append([*head, "-", "-", "missing", "-"] + (["-"] if nodes else []))
        for index, inst in enumerate(row["instances"]):
            cells = head if index == 0 else [""] * len(head)
            endpoint = inst["endpoint"] or "-"
            table.append(
                [
                    *cells,
                    inst["name"] or inst["container"],
                    endpoint + ("" if inst["routed"] else " (not routed)"),
                    inst["state"],
                    (inst["since"] or "-")[:19],
                ]
                + ([(inst.get("node") or "-")[:12]] if nodes else [])
            )
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _print_footer(status: dict[str, Any]) -> None:
    problem = status["pool_problem"]
    if problem is None:
        print(f"\npool generation: {status['generation']}")
    elif problem == "missing":
        print("\npool generation: (no config/backends.json yet: run lbrec apply)")
    else:
        print(
            f"\npool: config/backends.json is {problem}\n"
            "  a running proxy keeps serving its last good pool; `lbrec apply` rewrites the file"
        )
    proxy = status["proxy"]
    if proxy is None:
        print("proxy: not answering on the admin address")
    else:
        same = proxy["generation"] == status["generation"]
        print(
            f"proxy: running at {proxy['admin']}, generation {proxy['generation']} "
            f"({'in sync' if same else 'NOT the generation on disk'})"
        )
    for name, entry in sorted(status["rolled_back"].items()):
        print(
            f"held: {name}'s version {str(entry.get('hash', '?'))[:12]} was rolled back "
            f"({entry.get('reason', '')}); `lbrec up`/`sync` do not roll it out again until it "
            "changes (`lbrec apply` retries it)"
        )
    for name, why in sorted(status.get("crash_loops", {}).items()):
        print(f"held: {name}: {why}")
    if (deployed := status["deployed"]) is not None:
        print(
            f"deployed: {deployed.get('commit', '?')[:12]} by {deployed.get('author', '?')} "
            f"at {deployed.get('time', '?')} from {deployed.get('source', '?')}: "
            f"{deployed.get('message', '')}"
        )


def show_history(workspace: Workspace, last: int, *, json_mode: bool) -> int:
    """`lbrec status --history`: the last passes from the audit log, oldest first."""
    records = read_history(workspace.folder, last)
    if json_mode:
        print(json.dumps({"history": records}, indent=2))
        return 0
    if not records:
        print(f"no passes recorded yet in {AUDIT_FILE}")
        return 0
    table = [["TIME", "COMMAND", "OUTCOME", "SECONDS", "REVISION", "CHANGES"]]
    for r in records:
        revision = (r.get("revision") or {}).get("commit") or "-"
        changes = ", ".join(f"{c['action']} {c['backend']}" for c in r.get("changes") or [])
        detail = r.get("error") or "; ".join(
            f"{b}: {e}"
            for key in ("errors", "preempted", "deferred")
            for b, e in (r.get(key) or {}).items()
        )
        table.append(
            [
                str(r.get("time", "?"))[:23],
                str(r.get("command", "?")),
                str(r.get("outcome", "?")),
                f"{float(r.get('duration_s') or 0):.1f}",
                revision[:12],
                (changes or "-") + (f" ({detail})" if detail else ""),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0
