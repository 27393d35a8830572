"""``python -m durasync``: the same as the ``durasync`` console script."""

from __future__ import annotations

import sys

from durasync.cli import main

if __name__ == "__main__":
    sys.exit(main())
