"""`python -m reconciler` is `lbrec`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
