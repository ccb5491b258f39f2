"""``python -m lbrec`` is ``lbrec``; so is ``python -m reconciler`` run from a checkout (the
original tool's way), which this forwards to the one package, :mod:`lbrec.reconciler`."""

from __future__ import annotations

if __package__ == "reconciler":  # `python -m reconciler` in the repository
    from lbrec.reconciler.commands.cli import main
else:
    from .commands.cli import main

raise SystemExit(main())
