"""Where a command's words go: human progress, errors, and stdout kept one JSON document."""

from __future__ import annotations

import sys


class Out:
    def __init__(self, *, json_mode: bool, color: bool) -> None:
        from ..core.output import Style

        self.json = json_mode
        self.style: Style = Style(color=color)

    def info(self, text: str) -> None:
        """Human progress: stderr in JSON mode so stdout stays one JSON document."""
        print(text, file=sys.stderr if self.json else sys.stdout, flush=True)

    def err(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
