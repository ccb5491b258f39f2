"""``python -m lbrec`` is ``lbrec``."""

from __future__ import annotations

from .reconciler.commands.cli import main

raise SystemExit(main())
