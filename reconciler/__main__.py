"""`python -m reconciler` is `lbrec`."""

from __future__ import annotations

from .commands.cli import main

raise SystemExit(main())
