#!/usr/bin/env python3
"""Compatibility entry point of the original tool: `python cli.py init|add|remove ...`.

Everything it did is now `lbrec`; this file only forwards to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lbrec.reconciler.commands.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
