"""`lbrec rollout status|promote|abort`: the canary in progress, and requests to it."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from .console import Out

if TYPE_CHECKING:
    from ..adapters.workspace import Workspace


def rollout_command(args: argparse.Namespace, workspace: Workspace, out: Out) -> int:
    from ..adapters.rollout_control import read_state, request

    folder = workspace.folder
    if args.action == "status":
        state = read_state(folder)
        if out.json:
            print(json.dumps({"canaries": state}, indent=2))
            return 0
        if not state:
            out.info("no canary in progress")
            return 0
        for name, entry in sorted(state.items()):
            steps = " -> ".join(f"{p}%" if isinstance(p, int) else str(p) for p in entry["steps"])
            elapsed = time.time() - float(entry.get("since") or time.time())
            left = max(float(entry.get("interval") or 0) - elapsed, 0.0)
            line = f"{name}: {entry['state']} at {entry['percent']}% of {steps}"
            if entry["state"] == "judging":
                line += f", {elapsed:.0f}s into the step ({left:.0f}s left)"
            if not entry.get("alive"):
                line += (
                    " (the pass running it is gone: the next apply rolls it back and starts again)"
                )
            print(line)
        return 0
    what = "abort" if args.action == "abort" else ("promote-full" if args.full else "promote")
    backend = request(folder, args.backend, what)  # type: ignore[arg-type]
    out.info(f"{backend}: asked the running canary to {what.replace('-', ' ')}")
    return 0
