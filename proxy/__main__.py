"""``python -m lbrec.proxy`` (and ``python3 -m proxy`` in the lb image): see :mod:`.cli`."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
